"""`reelfs tape read`, `reelfs import-volume`, `reelfs rebuild-catalog`: tapes as tapes
(backend.admin.tapes, in the daemon or on the unmounted archive).

`tape read` always receives the data through a FIFO in the archive's `run/` directory
and copies it to standard output: the command, wherever it runs, writes into the FIFO
(the daemon's control socket carries JSON, not gigabytes).
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

from backend.admin import registry
from backend.config import Config
from backend.names import printable
from mountfs.cli.console import UsageError, config_of, err, out

READ_CHUNK = 1 << 20
EXIT_SIGPIPE = 141


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- tape read ---------------------------------------------------------------------------------


def cmd_tape_read(a: argparse.Namespace) -> int:
    out_fd = os.open(a.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if a.output else 1
    try:
        if os.isatty(out_fd):
            raise UsageError(
                "tape data is binary: pipe it (reelfs tape read V N | tar -tvf -) or give "
                "--output FILE"
            )
        try:
            stats = _read(config_of(a), a.volume, a.fileno, out_fd)
        except BrokenPipeError:
            # the reader stopped reading (tar stops at the end of the archive, before the
            # padding of the last record): quiet, with the status of dd killed by SIGPIPE
            return EXIT_SIGPIPE
    finally:
        if a.output:
            os.close(out_fd)
    if a.verbose:
        err.print(
            f"{stats['volume']} data file {stats['fileno']}: {stats['records']} record(s), "
            f"{stats['bytes']} bytes"
        )
    return 0


def _read(config: Config, label: str, fileno: int, out_fd: int) -> dict:
    """Have the command stream the data file into a FIFO and copy the FIFO to `out_fd`."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    fifo = config.run_dir / f"tape-read.{os.getpid()}.{secrets.token_hex(4)}"
    os.mkfifo(fifo, 0o600)
    try:
        # Opened before asking, without blocking: the writer then finds a reader, and
        # poll() reports a hangup only once a writer has come and gone.
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        answer: dict[str, Any] = {}

        def ask() -> None:
            try:
                answer["ok"] = registry.run(
                    config, "tape.read", volume=label, fileno=fileno, fifo=str(fifo)
                )
            except BaseException as e:
                answer["error"] = e
            finally:
                # Done with the FIFO: if the command never opened it (an error), come and
                # go as a writer so that the reader sees the end.
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
                except OSError:
                    pass

        asker = threading.Thread(target=ask, name="tape-read", daemon=True)
        asker.start()
        try:
            _drain_fifo(r, out_fd)
        finally:
            os.close(r)  # on our broken pipe, the writer's next write fails: it stops
            asker.join()
    finally:
        fifo.unlink(missing_ok=True)
    if "error" in answer:
        raise answer["error"]
    return dict(answer["ok"])


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
    rep = registry.run(
        config_of(a),
        "tape.import",
        volume=a.volume,
        directory=a.directory,
        uid=os.getuid(),
        gid=os.getgid(),
        same_owner=a.same_owner,
    )
    if a.json:
        print(json.dumps(rep))
        return 0
    out.print(
        f"{rep['volume']}: {rep['files']} file(s), {rep['bytes']} bytes from "
        f"{rep['data_files']} data file(s) "
        f"({', '.join(f'{k} {v}' for k, v in sorted(rep['formats'].items())) or 'no archives'})"
        f" now under {printable(rep['directory'])}, read-only"
    )
    for s in rep["skipped"]:
        out.print(f"  skipped: {printable(str(s))}")
    return 0


# -- rebuild-catalog ------------------------------------------------------------------------


def cmd_rebuild_catalog(a: argparse.Namespace) -> int:
    if not a.from_tapes:
        raise UsageError("reelfs rebuild-catalog needs --from-tapes (the only source there is)")

    def progress(text: str) -> None:
        if not a.json:
            err.print(printable(text))

    rep = registry.run(config_of(a), "catalog.rebuild", progress=progress, force=a.force)
    if a.json:
        print(json.dumps(rep))
        return 0
    out.print(
        f"catalog rebuilt from {rep['volumes_scanned']} volume(s): {rep['files']} file(s) "
        f"({rep['versions']} version(s), {rep['copies']} tape copies), {rep['directories']} "
        f"director{'y' if rep['directories'] == 1 else 'ies'}"
    )
    if rep["previous"]:
        out.print(f"the previous catalog is kept as {rep['previous']}")
    for line in rep["notes"]:
        out.print(f"  {printable(str(line))}")
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
