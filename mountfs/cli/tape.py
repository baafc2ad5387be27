"""`reelfs tape read`, `reelfs import-volume`, `reelfs rebuild-catalog`: tapes as tapes.

While the archive is mounted its daemon owns the library, so `tape read` and
`import-volume` go through it (a job a free mover runs, see backend.tapejobs): `tape read`
receives the data through a FIFO in the archive's `run/` directory and copies it to
standard output. When the archive is not mounted they take the archive lock and use a
drive of the library themselves (backend.offline). `rebuild-catalog` replaces the catalog,
so it only runs with the archive unmounted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import threading
from collections.abc import Callable
from typing import Any

from backend import config as cfgmod
from backend.admin.control import DaemonNotRunning, call, is_running
from backend.errors import ArchiveError

#: how long the CLI waits for the daemon's answer to a tape job (a whole volume's scan)
JOB_TIMEOUT = 7 * 24 * 3600.0
READ_CHUNK = 1 << 20
EXIT_SIGPIPE = 141


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- tape read ---------------------------------------------------------------------------------


def cmd_tape_read(a: argparse.Namespace) -> int:
    from mountfs.cli.main import UsageError, err, open_archive

    out = os.open(a.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if a.output else 1
    try:
        if os.isatty(out):
            raise UsageError(
                "tape data is binary: pipe it (reelfs tape read V N | tar -tvf -) or give "
                "--output FILE"
            )
        config, cat = open_archive(a)
        try:
            if is_running(config.socket_path):
                stats = _read_online(config, a.volume, a.fileno, out)
            else:
                stats = _read_offline(config, cat, a.volume, a.fileno, out)
        except BrokenPipeError:
            # the reader stopped reading (tar stops at the end of the archive, before the
            # padding of the last record): quiet, with the status of dd killed by SIGPIPE
            return EXIT_SIGPIPE
        finally:
            cat.close()
    finally:
        if a.output:
            os.close(out)
    if a.verbose:
        err.print(
            f"{stats['volume']} data file {stats['fileno']}: {stats['records']} record(s), "
            f"{stats['bytes']} bytes"
        )
    return 0


def _read_offline(config: cfgmod.Config, cat: Any, label: str, fileno: int, out: int) -> dict:
    from backend.daemon.archive import lock_archive
    from backend.library.offline import volume_in_drive
    from backend.tape.read import read_data_file
    from drivers.library import open_library

    fd = lock_archive(config)
    try:
        lib = open_library(config.library.spec, config.archive)
        try:
            with volume_in_drive(lib, label, cat) as drive:
                return read_data_file(
                    drive, cat, label, fileno, out, default_layout=config.library.label_format
                )
        finally:
            lib.close()
    finally:
        os.close(fd)


def _read_online(config: cfgmod.Config, label: str, fileno: int, out: int) -> dict:
    """Ask the daemon to stream the data file into a FIFO and copy the FIFO to `out`."""
    fifo = config.run_dir / f"tape-read.{os.getpid()}.{secrets.token_hex(4)}"
    os.mkfifo(fifo, 0o600)
    try:
        # Opened before asking, without blocking: the daemon's writer then finds a reader,
        # and poll() reports a hangup only once a writer has come and gone.
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        answer: dict[str, Any] = {}

        def ask() -> None:
            try:
                answer["ok"] = call(
                    config.socket_path,
                    "tape_read",
                    volume=label,
                    fileno=fileno,
                    fifo=str(fifo),
                    timeout=JOB_TIMEOUT,
                )
            except BaseException as e:
                answer["error"] = e
            finally:
                # The daemon is done with the FIFO: if it never opened it (an error), come
                # and go as a writer so that the reader sees the end.
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
                except OSError:
                    pass

        asker = threading.Thread(target=ask, name="tape-read", daemon=True)
        asker.start()
        try:
            _drain_fifo(r, out)
        finally:
            os.close(r)  # on our broken pipe, the daemon's next write fails: it stops
            asker.join()
    finally:
        fifo.unlink(missing_ok=True)
    if "error" in answer:
        raise answer["error"]
    result = dict(answer["ok"])
    result.pop("ok", None)
    return result


def _drain_fifo(r: int, out: int) -> None:
    poller = select.poll()
    poller.register(r, select.POLLIN)
    while True:
        poller.poll()
        while True:
            try:
                data = os.read(r, READ_CHUNK)
            except BlockingIOError:
                break  # nothing yet: poll again
            if not data:
                return  # the writer closed
            _write_all(out, data)


# -- import-volume --------------------------------------------------------------------------


def cmd_import_volume(a: argparse.Namespace) -> int:
    from mountfs.cli.main import open_archive, out

    config, cat = open_archive(a)
    try:
        args = {
            "volume": a.volume,
            "directory": a.directory,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "same_owner": a.same_owner,
        }
        try:
            rep = call(config.socket_path, "import_volume", timeout=JOB_TIMEOUT, **args)
            rep.pop("ok", None)
        except DaemonNotRunning:
            rep = _import_offline(config, cat, a)
    finally:
        cat.close()
    if a.json:
        print(json.dumps(rep))
        return 0
    out.print(
        f"{rep['volume']}: {rep['files']} file(s), {rep['bytes']} bytes from "
        f"{rep['data_files']} data file(s) "
        f"({', '.join(f'{k} {v}' for k, v in sorted(rep['formats'].items())) or 'no archives'})"
        f" now under {rep['directory']}, read-only"
    )
    for s in rep["skipped"]:
        out.print(f"  skipped: {s}")
    return 0


def _import_offline(config: cfgmod.Config, cat: Any, a: argparse.Namespace) -> dict:
    from backend.admin.tapes import default_capacity
    from backend.daemon.archive import lock_archive
    from backend.library.offline import volume_in_drive
    from backend.tape import foreign
    from drivers.library import open_library

    fd = lock_archive(config)
    try:
        lib = open_library(config.library.spec, config.archive)
        try:
            foreign.check_volume(cat, a.volume)
            foreign.check_target(cat, a.directory)
            foreign.prepare_volume(
                cat,
                lib.changer,
                a.volume,
                media_type=config.library.type,
                capacity=default_capacity(config, cat),
            )
            try:
                with volume_in_drive(lib, a.volume, cat) as drive:
                    scan = foreign.scan_volume(drive)
                rep = foreign.adopt(
                    cat,
                    config.archive_id,
                    a.volume,
                    a.directory,
                    scan,
                    uid=os.getuid(),
                    gid=os.getgid(),
                    same_owner=a.same_owner,
                )
            except Exception as e:
                foreign.import_failed(cat, a.volume, str(e))
                raise
            return rep.__dict__
        finally:
            lib.close()
    finally:
        os.close(fd)


# -- rebuild-catalog ------------------------------------------------------------------------


def cmd_rebuild_catalog(a: argparse.Namespace) -> int:
    from backend.daemon.archive import lock_archive
    from backend.tape.rebuild import rebuild
    from mountfs import locate
    from mountfs.cli.main import UsageError, err, out

    if not a.from_tapes:
        raise UsageError("reelfs rebuild-catalog needs --from-tapes (the only source there is)")
    config = locate.load_config(locate.find_archive(a.archive))
    if is_running(config.socket_path):
        raise ArchiveError(
            f"archive {config.archive} is mounted: unmount it first (its catalog is replaced)"
        )
    fd = lock_archive(config)
    try:

        def progress(text: str) -> None:
            if not a.json:
                err.print(text)

        rep = rebuild(config, force=a.force, progress=progress)
    finally:
        os.close(fd)
    if a.json:
        print(json.dumps(rep.as_dict()))
        return 0
    out.print(
        f"catalog rebuilt from {rep.volumes_scanned} volume(s): {rep.files} file(s) "
        f"({rep.versions} version(s), {rep.copies} tape copies), {rep.directories} "
        f"director{'y' if rep.directories == 1 else 'ies'}"
    )
    if rep.previous:
        out.print(f"the previous catalog is kept as {rep.previous}")
    for line in rep.notes:
        out.print(f"  {line}")
    return 0


# -- registration ---------------------------------------------------------------------------


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    tape = add("tape", _tape_usage, "read tapes as tapes: tape read VOLUME FILENO")
    tsub = tape.add_subparsers(dest="tape_command", metavar="COMMAND", required=True)
    rp = tsub.add_parser(
        "read",
        help="the raw bytes of one data file of a volume, to standard output",
        description="Write data file FILENO (from 0, as user.reelfs.location counts; labels "
        "excluded) of VOLUME to standard output, record by record, as dd after mt fsf "
        "would: reelfs tape read RF0001 3 | tar -tvf -",
    )
    rp.add_argument("--archive", metavar="DIR", default=argparse.SUPPRESS)
    rp.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not standard output")
    rp.add_argument("-v", "--verbose", action="store_true", help="say what was read (stderr)")
    rp.add_argument("volume", metavar="VOLUME")
    rp.add_argument("fileno", metavar="FILENO", type=int)
    rp.set_defaults(func=cmd_tape_read)

    sp = add(
        "import-volume",
        cmd_import_volume,
        "adopt a tape written by others (tar, pax, cpio) as a read-only volume",
    )
    sp.add_argument("volume", metavar="BARCODE")
    sp.add_argument("directory", metavar="DIRECTORY", help="archive path to put its files under")
    sp.add_argument(
        "--same-owner", action="store_true", help="keep the tape's owners (default: yours)"
    )

    sp = add(
        "rebuild-catalog",
        cmd_rebuild_catalog,
        "rebuild the catalog by reading every volume (the archive must be unmounted)",
    )
    sp.add_argument(
        "--from-tapes", action="store_true", help="scan the volumes in the library (required)"
    )
    sp.add_argument(
        "--force", action="store_true", help="replace an existing catalog (it is kept aside)"
    )


def _tape_usage(a: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a command
    return 2
