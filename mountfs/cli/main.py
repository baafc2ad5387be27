"""The `reelfs` command line.

Every command that acts on an archive finds it with `mountfs.locate`. Listings print rich
tables, or JSON with `--json`. Every error is one line on stderr and a non-zero exit
code: 1 for a failed operation, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from backend import config as cfgmod
from backend.admin import files as admin
from backend.admin.control import ControlError, DaemonNotRunning, call, is_running
from backend.cache.eviction import recopy_pending
from backend.catalog.db import CatalogError
from backend.errors import ArchiveError
from mountfs import locate, views

EXIT_FAIL = 1
EXIT_USAGE = 2

#: modules adding command groups: each has `register(add)`, where
#: `add(name, function, help) -> argparse.ArgumentParser` adds one subcommand
COMMAND_MODULES: list[str] = [
    "mountfs.cli.library",
    "mountfs.cli.serve",
    "mountfs.cli.tape",
    "mountfs.cli.subscribe",
]

# markup off: paths and messages may contain [brackets] that are not rich markup
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class UsageError(Exception):
    pass


# -- commands --------------------------------------------------------------------------------


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


def cmd_mount(a: argparse.Namespace) -> int:
    from mountfs.mount import daemonize_and_serve, serve, setup_logging

    overrides = list(a.option or [])
    if a.allow_other:
        overrides.append("mount.allow_other=true")
    config = cfgmod.load(Path(a.archive), overrides)
    from backend.replication.post_config import load_post, load_serve

    load_post(config.raw)  # validated here, so a bad section is a usage error, not a crash
    load_serve(config.raw)
    mnt = Path(a.mountpoint).absolute()
    if not mnt.is_dir():
        raise ArchiveError(f"mount point {mnt} is not a directory")
    if os.path.ismount(mnt):
        raise ArchiveError(f"{mnt} is already a mount point")
    if is_running(config.socket_path):
        raise ArchiveError(f"archive {config.archive} is already mounted (its daemon is running)")
    if a.foreground:
        setup_logging(config, foreground=True, debug=a.debug)
        return serve(config, mnt, fuse_extra=a.fuse_option or [], ready=None, debug=a.debug)
    daemonize_and_serve(config, mnt, fuse_extra=a.fuse_option or [], debug=a.debug)
    if not a.json:
        out.print(f"archive {config.archive} mounted on {mnt}")
    return 0


def cmd_umount(a: argparse.Namespace) -> int:
    mnt = Path(a.mountpoint).absolute()
    archive = locate.archive_of_path(str(mnt))
    if archive is None:
        raise ArchiveError(f"{mnt} is not a reelfs mount")
    config = cfgmod.load(archive)
    info = call(config.socket_path, "ping")
    pid = int(info["pid"])
    cat = locate.catalog(config)
    try:
        files, nbytes = admin.pending_writes(cat)
        if files and not a.no_wait:
            err.print(
                f"{files} file(s), {cfgmod.format_size(nbytes)}, not on tape yet: "
                "flushing them before unmounting (--no-wait leaves them queued)"
            )
            call(config.socket_path, "drain")
            views.wait_progress(
                lambda: _pending_done(cat, files, nbytes),
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


def _pending_done(cat: Any, files0: int, bytes0: int) -> tuple[int, bool]:
    files, nbytes = admin.pending_writes(cat)
    if files and not cat.value("SELECT count(*) FROM drives WHERE state='up'"):
        raise ArchiveError(
            f"no drive is up: {files} file(s) cannot go to tape now; put a drive back "
            "(reelfs drive up NAME) or unmount with --no-wait to leave them queued"
        )
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


def open_archive(a: argparse.Namespace, paths: Sequence[str] = ()) -> tuple[cfgmod.Config, Any]:
    """The configuration and a catalog connection of the archive a command is about."""
    archive = locate.find_archive(a.archive, list(paths))
    config = locate.load_config(archive)
    return config, locate.catalog(config)


_open = open_archive


def _admin(a: argparse.Namespace, op: str) -> int:
    config, cat = _open(a, a.paths)
    try:
        targets = locate.inodes_for(config, cat, a.paths)
        inodes = [t.inode for t in targets]
        try:
            answer = call(config.socket_path, op, inodes=inodes)
        except DaemonNotRunning:
            answer = _admin_offline(config, cat, op, inodes)
        queued = answer.pop("queued", None)
        if a.json and not getattr(a, "wait", False):
            print(json.dumps(answer))
        elif not a.json:
            views.print_summary(out, op, answer)
        if getattr(a, "wait", False):
            return _wait(a, config, cat, op, inodes, queued)
        return EXIT_FAIL if answer.get("errors") else 0
    finally:
        cat.close()


def _admin_offline(config: cfgmod.Config, cat: Any, op: str, inodes: list[int]) -> dict:
    """The daemon is down: do what can be done on the catalog alone, holding the lock."""
    from backend.cache.store import Cache
    from backend.daemon.archive import lock_archive

    if op == "flush":
        raise ArchiveError(
            f"archive {config.archive} is not mounted: files are written to tape "
            "by the running archive (reelfs mount)"
        )
    fd = lock_archive(config)
    try:
        if op == "release":
            cache = Cache(
                config.cache.path,
                config.cache.size,
                config.cache.high_watermark,
                config.cache.low_watermark,
            )
            return admin.release(cat, cache, inodes).as_dict()
        if op == "recall":
            s, queued = admin.recall(cat, config.archive_id, inodes)
            d = s.as_dict()
            d["note"] = "queued; recalls run when the archive is mounted"
            return {**d, "queued": queued}
        if op in ("pin", "unpin"):
            return admin.pin(cat, inodes, op == "pin").as_dict()
    finally:
        os.close(fd)
    raise ArchiveError(f"unknown operation {op}")


def _wait(
    a: argparse.Namespace,
    config: cfgmod.Config,
    cat: Any,
    op: str,
    inodes: list[int],
    queued: list[int] | None,
) -> int:
    if op == "flush":
        bitfiles = [
            b
            for b, state, _, _ in admin.bitfiles_under(cat, inodes)
            if state == "dirty" or (state == "archived" and recopy_pending(cat, b))
        ]
        goal = "archived"
    else:
        bitfiles = queued or []
        goal = "cached"
    sizes = {b: int(cat.value("SELECT size FROM bitfiles WHERE id=?", (b,)) or 0) for b in bitfiles}
    total = sum(sizes.values())
    errors: list[str] = []

    def progress() -> tuple[int, bool]:
        done_bytes = 0
        finished = 0
        errors.clear()
        for b in bitfiles:
            d, _, errs = admin.progress(cat, [b], goal)
            if d:
                finished += 1
                done_bytes += sizes[b]
            errors.extend(errs)
        return (done_bytes if total else finished), finished == len(bitfiles)

    views.wait_progress(
        progress,
        total=total or len(bitfiles),
        console=err if a.json else out,
        what="writing to tape" if op == "flush" else "recalling from tape",
        timeout=a.timeout,
        stalled=lambda: views.stall_reason(cat),
        quiet=a.json,
    )
    if a.json:
        print(json.dumps({"files": len(bitfiles), "bytes": total, "errors": errors}))
    for e in errors:
        err.print(f"reelfs: {e}")
    return EXIT_FAIL if errors else 0


def cmd_flush(a: argparse.Namespace) -> int:
    return _admin(a, "flush")


def cmd_recall(a: argparse.Namespace) -> int:
    return _admin(a, "recall")


def cmd_release(a: argparse.Namespace) -> int:
    return _admin(a, "release")


def cmd_pin(a: argparse.Namespace) -> int:
    return _admin(a, "pin")


def cmd_unpin(a: argparse.Namespace) -> int:
    return _admin(a, "unpin")


def cmd_info(a: argparse.Namespace) -> int:
    config, cat = _open(a, a.paths)
    try:
        targets = locate.inodes_for(config, cat, a.paths)
        infos = [views.file_info(cat, config, t.inode, t.path) for t in targets]
    finally:
        cat.close()
    if a.json:
        print(json.dumps(infos if len(infos) != 1 else infos[0], default=str))
    else:
        for i in infos:
            views.print_info(out, i)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    config, cat = _open(a)
    try:
        try:
            daemon = call(config.socket_path, "status", timeout=10)
        except (DaemonNotRunning, ControlError):
            daemon = None
        st = views.status(cat, config, daemon)
    finally:
        cat.close()
    if a.json:
        print(json.dumps(st, default=str))
    else:
        views.print_status(out, st)
    return 0


def _listing(
    a: argparse.Namespace, fetch: Callable[[Any], list[dict]], title: str, columns: list[str]
) -> int:
    _config, cat = _open(a)
    try:
        rows = fetch(cat)
    finally:
        cat.close()
    if a.json:
        print(json.dumps(rows, default=str))
    else:
        views.print_table(out, title, rows, columns)
    return 0


def cmd_volumes(a: argparse.Namespace) -> int:
    return _listing(a, views.volumes, "Volumes", views.VOLUME_COLUMNS)


def cmd_drives(a: argparse.Namespace) -> int:
    return _listing(a, views.drives, "Drives", views.DRIVE_COLUMNS)


def cmd_queue(a: argparse.Namespace) -> int:
    return _listing(
        a, lambda c: views.queue(c, None if a.all else 100), "Queue", views.QUEUE_COLUMNS
    )


def cmd_events(a: argparse.Namespace) -> int:
    return _listing(a, lambda c: views.events(c, a.limit, a.kind), "Events", views.EVENT_COLUMNS)


def cmd_drive(a: argparse.Namespace) -> int:
    config, cat = _open(a)
    try:
        known = {r[0] for r in cat.all("SELECT name FROM drives")}
        if a.name not in known:
            raise ArchiveError(f"no drive named {a.name!r} (known: {', '.join(sorted(known))})")
        try:
            answer = call(
                config.socket_path,
                "drive",
                name=a.name,
                state=a.state,
                reason=a.reason,
                timeout=600,
            )
        except DaemonNotRunning:
            from backend.daemon.archive import lock_archive

            fd = lock_archive(config)
            try:
                with cat.tx():
                    cat.execute(
                        "UPDATE drives SET state=?, reason=? WHERE name=?",
                        (
                            a.state,
                            None if a.state == "up" else a.reason or "set down by the operator",
                            a.name,
                        ),
                    )
            finally:
                os.close(fd)
            answer = {"drive": a.name, "state": a.state}
    finally:
        cat.close()
    if a.json:
        print(json.dumps(answer))
    else:
        out.print(f"drive {answer['drive']} is {answer['state']}")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from backend.daemon.recovery import integrity_check

    _config, cat = _open(a)
    try:
        problems = integrity_check(cat)
    finally:
        cat.close()
    if a.json:
        print(json.dumps({"ok": not problems, "problems": problems}))
    elif problems:
        for p in problems:
            err.print(f"reelfs: catalog problem: {p}")
    else:
        out.print("catalog consistent")
    return EXIT_FAIL if problems else 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    plain = argparse.ArgumentParser(add_help=False)
    plain.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[plain])
    common.add_argument(
        "--archive",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the archive directory (default: $REELFS_ARCHIVE, or the archive "
        "behind a path on a mount)",
    )
    p = argparse.ArgumentParser(
        prog="reelfs",
        description="A tape-backed archive behind an ordinary mount point.",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        parent = plain if name in ("init", "mount", "umount", "serve") else common
        sp = sub.add_parser(name, help=help, description=help, parents=[parent])
        sp.set_defaults(func=fn)
        return sp

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

    sp = add("umount", cmd_umount, "unmount an archive; waits for pending writes by default")
    sp.add_argument("mountpoint", metavar="MOUNTPOINT")
    sp.add_argument(
        "--no-wait",
        action="store_true",
        help="leave files not yet on tape queued for the next mount",
    )
    sp.add_argument("--timeout", type=float, default=3600.0)

    for name, fn, help in (
        ("flush", cmd_flush, "write files below PATHs to tape now"),
        (
            "recall",
            cmd_recall,
            "bring released files below PATHs back into the cache, in tape order",
        ),
        ("release", cmd_release, "drop cached copies of archived files (tape only afterwards)"),
        ("pin", cmd_pin, "keep files in the cache"),
        ("unpin", cmd_unpin, "let files leave the cache again"),
    ):
        sp = add(name, fn, help)
        sp.add_argument("paths", nargs="+", metavar="PATH")
        if name in ("flush", "recall"):
            sp.add_argument("--wait", action="store_true", help="show progress until done")
            sp.add_argument("--timeout", type=float, default=None)

    sp = add("info", cmd_info, "what the archive knows of files")
    sp.add_argument("paths", nargs="+", metavar="PATH")
    add("status", cmd_status, "drives, queue, cache and volumes at a glance")
    add("volumes", cmd_volumes, "list the tape volumes")
    add("drives", cmd_drives, "list the tape drives")
    sp = add("queue", cmd_queue, "list queued and running requests")
    sp.add_argument("--all", action="store_true")
    sp = add("events", cmd_events, "recent events of the archive")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--kind", default=None)
    sp = add("drive", cmd_drive, "take a drive out of service, or put it back")
    sp.add_argument("state", choices=["up", "down"])
    sp.add_argument("name", metavar="DRIVE")
    sp.add_argument("--reason", default="")
    add("check", cmd_check, "check the catalog's integrity")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    a.json = getattr(a, "json", False)
    a.archive = getattr(a, "archive", None)
    try:
        return int(a.func(a) or 0)
    except UsageError as e:
        err.print(f"reelfs: {e}")
        return EXIT_USAGE
    except cfgmod.ConfigError as e:
        err.print(f"reelfs: configuration: {e}")
        return EXIT_USAGE
    except (ArchiveError, ControlError, DaemonNotRunning, CatalogError) as e:
        err.print(f"reelfs: {e}")
        return EXIT_FAIL
    except views.WaitTimeout as e:
        err.print(f"reelfs: {e}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        err.print("reelfs: interrupted")
        return 130
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"reelfs: {where}{e.strerror or e}")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
