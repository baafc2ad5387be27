"""`reelfs init`, `reelfs mount`, `reelfs umount`: an archive's life cycle."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import config as cfgmod
from backend.admin.control import call, is_running
from backend.admin.files import pending_writes
from backend.catalog import events
from backend.errors import ArchiveError
from mountfs import locate, views
from mountfs.cli.console import UsageError, err, out

# The daemon, the drivers and replication are imported by the commands that need them:
# every other reelfs command would pay for them at start.


def cmd_init(a: argparse.Namespace) -> int:
    from backend.daemon.create import InitOptions, init_archive

    opts = InitOptions(
        drives=a.drives,
        volumes=a.volumes,
        volume_size=cfgmod.parse_size(a.volume_size, "--volume-size"),
        cache_size=cfgmod.parse_size(a.cache_size, "--cache-size") if a.cache_size else None,
        name=a.name,
        library=a.library,
        changer=a.changer,
        drive_urls=a.drive or [],
        label_format=a.label_format,
        block_size=cfgmod.parse_size(a.block_size, "--block-size") if a.block_size else None,
        label_prefix=a.label_prefix,
    )
    opts.extra = cfgmod.apply_overrides({}, a.option or [])  # the keys `mount -o` takes
    config = init_archive(Path(a.archive), opts)
    _warn(opts.warnings)
    if a.json:
        print(
            json.dumps(
                {
                    "archive": str(config.archive),
                    "id": config.archive_id,
                    "block_size": config.library.block_size,
                    "notes": opts.notes,
                }
            )
        )
        return 0
    if config.library.type == "emulated":
        what = (
            f"{a.volumes} volume(s) of {cfgmod.format_size(opts.volume_size)}, "
            f"{a.drives} drive(s), emulated library"
        )
    else:
        what = f"{len(opts.drive_urls)} drive(s), SCSI library (its tapes are taken in at mount)"
    out.print(f"created archive {config.archive} (id {config.archive_id}): {what}")
    for note in opts.notes:
        out.print(f"  {note}")
    return 0


def _warn(lines: list[str]) -> None:
    for line in lines:
        err.print(f"reelfs: warning: {line}")


def cmd_mount(a: argparse.Namespace) -> int:
    from backend.permissions import set_private_umask
    from backend.replication.post_config import load_post, load_serve
    from mountfs.mount import daemonize_and_serve, serve, setup_logging

    overrides = list(a.option or [])
    if a.allow_other:
        overrides.append("mount.allow_other=true")
    config = cfgmod.load(Path(a.archive), overrides)
    load_post(config.raw)  # validated here, so a bad section is a usage error, not a crash
    load_serve(config.raw)
    mnt = Path(a.mountpoint).absolute()
    check_mount_point(mnt, nonempty=a.nonempty)
    if is_running(config.socket_path):
        raise ArchiveError(f"archive {config.archive} is already mounted (its daemon is running)")
    for other in locate.stale_mounts(config.archive):
        err.print(
            f"reelfs: note: archive {config.archive} also has a stale mount on {other} "
            f"(daemon gone); reelfs umount {other} cleans it up"
        )
    _check_limits(config)
    set_private_umask()  # this process becomes the daemon: its logs are private from the start
    if a.foreground:
        setup_logging(config, foreground=True, debug=a.debug)
        return serve(config, mnt, fuse_extra=a.fuse_option or [], ready=None, debug=a.debug)
    daemonize_and_serve(config, mnt, fuse_extra=a.fuse_option or [], debug=a.debug)
    if not a.json:
        out.print(f"archive {config.archive} mounted on {mnt}")
    return 0


def check_mount_point(mnt: Path, *, nonempty: bool) -> None:
    """UsageError unless `mnt` can be mounted on: the stale mount a crash left (refused,
    not cleaned: which archive it was is the operator's to see), a directory, not a mount
    point already, and empty unless `nonempty` (a mount would hide its files)."""
    here = locate.mount_at(mnt)
    if here is not None and here.stale:
        raise UsageError(
            f"{mnt} is a stale mount (daemon gone) of archive {here.archive}: "
            f"reelfs umount {mnt} cleans it up, then mount again [stale_mount]"
        )
    if not mnt.is_dir():
        raise UsageError(f"mount point {mnt} is not a directory [mount_point_not_directory]")
    if os.path.ismount(mnt):
        what = f"archive {here.archive} is mounted there" if here else "something is mounted there"
        raise UsageError(f"{mnt} is already a mount point ({what}) [mount_point_busy]")
    if not nonempty:
        with os.scandir(mnt) as it:
            first = next(it, None)
        if first is not None:
            raise UsageError(
                f"mount point {mnt} is not empty ({first.name!r} and maybe more would be "
                "hidden while mounted): give --nonempty to mount over it [mount_point_not_empty]"
            )


def _check_limits(config: cfgmod.Config) -> None:
    """Before the daemon is started: a max_file_size no volume can take is a usage error
    (exit 2), a cache file system smaller than [cache] size a warning. The daemon checks
    both again, for the volumes it finds and with an event."""
    from backend.cache.store import fs_smaller_than
    from backend.tape.limits import check_max_file_size, limit_of

    cat = locate.catalog(config)
    try:
        check_max_file_size(config.mount.max_file_size, limit_of(cat, config))
    finally:
        cat.close()
    small = fs_smaller_than(config.cache.path, config.cache.size)
    _warn([small] if small else [])


def cmd_umount(a: argparse.Namespace) -> int:
    mnt = Path(a.mountpoint).absolute()
    archive = locate.archive_of_path(str(mnt))
    if archive is None:
        here = locate.mount_at(mnt)
        if here is not None and here.stale:
            _clean_stale(mnt, here, quiet=a.json)
            return 0
        raise ArchiveError(f"{mnt} is not a reelfs mount")
    config = cfgmod.load(archive)
    info = call(config.socket_path, "ping")
    pid = int(info["pid"])
    cat = locate.catalog(config)
    try:
        files, nbytes = pending_writes(cat)
        if files and not a.no_wait:
            blocked = _blocked(cat, config)
            blocked()  # before asking for a flush that cannot happen
            err.print(
                f"{files} file(s), {cfgmod.format_size(nbytes)}, not on tape yet: "
                "flushing them before unmounting (--no-wait leaves them queued)"
            )
            call(config.socket_path, "drain")
            views.wait_progress(
                lambda: _pending_done(cat, files, nbytes, blocked),
                total=nbytes or files,
                what="flushing to tape",
                timeout=a.timeout,
                console=err,
                stalled=lambda: views.stall_reason(cat),
            )
        elif files:
            err.print(
                f"{files} file(s), {cfgmod.format_size(nbytes)}, not on tape yet stay "
                "queued for the next mount"
            )
    finally:
        cat.close()
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [fusermount, "-u", str(mnt)] if fusermount else ["umount", str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise ArchiveError(f"cannot unmount {mnt}: {msg[-1] if msg else 'failed'}")
    deadline = time.monotonic() + a.timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise ArchiveError(
                f"unmounted, but the daemon (pid {pid}) has not stopped after "
                f"{a.timeout:.0f}s; see {config.log_dir / 'reelfsd.log'}"
            )
        time.sleep(0.05)
    if not a.json:
        out.print(f"unmounted {mnt}; tapes dismounted")
    return 0


def _clean_stale(mnt: Path, here: locate.ReelfsMount, *, quiet: bool) -> None:
    """Detach the stale mount a dead daemon left at `mnt` (lazily: a process still in it
    keeps its ENOTCONN, nothing waits), and say so in the archive's events."""
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    tries = [[fusermount, "-u", "-z", str(mnt)]] if fusermount else []
    tries.append(["umount", "-l", str(mnt)])
    why = "failed"
    for cmd in tries:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0 and locate.mount_at(mnt) is None:
            break
        why = ((r.stderr or r.stdout).strip().splitlines() or [why])[-1]
    else:
        raise ArchiveError(f"cannot clean up the stale mount {mnt} (daemon gone): {why}")
    what = f" of archive {here.archive}" if here.archive else ""
    if here.archive is not None:
        try:
            config = cfgmod.load(here.archive)
            cat = locate.catalog(config)
        except (cfgmod.ConfigError, OSError, ArchiveError):
            pass  # the archive moved or went: the mount is cleaned all the same
        else:
            try:
                events.record(
                    cat,
                    "stale_mount_cleaned",
                    f"reelfs umount detached the stale mount on {mnt} (daemon gone)",
                    subject=config.name,
                    level="warning",
                    mountpoint=str(mnt),
                )
            finally:
                cat.close()
    if not quiet:
        out.print(
            f"cleaned up the stale mount {mnt}{what} (daemon gone); "
            "the next reelfs mount recovers the archive"
        )


def _blocked(cat: Any, config: cfgmod.Config) -> Callable[[], None]:
    """A check that raises when what is left to flush cannot reach tape, saying why:
    umount must not wait on work that cannot happen."""
    from backend.tape.limits import limit_of, stuck_writes

    limit = limit_of(cat, config)

    def check() -> None:
        files, _ = pending_writes(cat)
        stuck = stuck_writes(cat, limit, config.library.block_size)
        if stuck is not None and stuck.files >= files:
            raise ArchiveError(
                f"cannot flush: {stuck.files} file(s), {cfgmod.format_size(stuck.nbytes)}, "
                f"cannot reach tape: {stuck.reason}; or unmount with --no-wait to leave "
                "them in the cache, queued for the next mount"
            )

    return check


def _pending_done(
    cat: Any, files0: int, bytes0: int, blocked: Callable[[], None]
) -> tuple[int, bool]:
    files, nbytes = pending_writes(cat)
    if files:
        blocked()
    done = (bytes0 - nbytes) if bytes0 else (files0 - files)
    return max(0, done), files == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours would still answer kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("init", cmd_init, "create an archive (with an emulated tape library by default)")
    sp.add_argument("archive", metavar="ARCHIVE")
    sp.add_argument("--drives", type=int, default=2)
    sp.add_argument("--volumes", type=int, default=8)
    sp.add_argument("--volume-size", default="2GiB")
    sp.add_argument("--cache-size", default=None)
    sp.add_argument("--name", default=None)
    sp.add_argument("--library", choices=["emulated", "scsi"], default="emulated")
    sp.add_argument("--changer", metavar="URL")
    sp.add_argument("--drive", metavar="URL", action="append")
    sp.add_argument("--label-format", choices=["none", "ansi"], default="none")
    sp.add_argument("--block-size", default=None)
    sp.add_argument("--label-prefix", default="RF")
    sp.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="set a reelfs.toml value",
    )

    sp = add("mount", cmd_mount, "mount an archive (starts its daemon)")
    sp.add_argument("archive", metavar="ARCHIVE")
    sp.add_argument("mountpoint", metavar="MOUNTPOINT")
    sp.add_argument("-f", "--foreground", action="store_true")
    sp.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a reelfs.toml value for this mount",
    )
    sp.add_argument("--allow-other", action="store_true", help="let other users in")
    sp.add_argument(
        "--fuse-option", action="append", metavar="OPT", help="pass a FUSE mount option"
    )
    sp.add_argument("--debug", action="store_true")
    sp.add_argument(
        "--nonempty",
        action="store_true",
        help="mount over a directory that has entries (hidden while mounted)",
    )

    sp = add("umount", cmd_umount, "unmount an archive; waits for pending writes by default")
    sp.add_argument("mountpoint", metavar="MOUNTPOINT")
    sp.add_argument(
        "--no-wait",
        action="store_true",
        help="leave files not yet on tape queued for the next mount",
    )
    sp.add_argument("--timeout", type=float, default=3600.0)
