"""Operator work on tapes while the archive is mounted: the daemon's side of `reelfs tape
read` and `reelfs import-volume`.

The daemon owns the library while it runs, so these go through it rather than around it:
each becomes a `TapeJob` the library manager gives to the next free mover (before queued
recalls and writes; a volume another mover holds is taken when that mover is done with
it), which mounts the volume and runs the job in its thread. The control operation waits
for the job and answers with its result.

`tape_read` streams the data file to the client through a FIFO the client made in the
archive's `run/` directory (the control socket carries one JSON answer, not gigabytes):
the mover opens it without blocking (so a client that went away is an error, not a hung
mover) and writes every record into it.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from backend.catalog.db import open_catalog
from backend.catalog.volumes import VolumeClerk
from backend.errors import ArchiveError
from backend.library.manager import TapeJob
from backend.tape import foreign
from backend.tape.read import read_data_file

if TYPE_CHECKING:
    from backend.daemon.archive import ArchiveDaemon
    from backend.mover.session import Mover

OPS = ("tape_read", "import_volume")
#: a larger pipe keeps the mover streaming while the reader catches up
PIPE_SIZE = 1 << 20


async def control(daemon: ArchiveDaemon, op: str, req: dict[str, Any]) -> dict[str, Any]:
    if op == "tape_read":
        return await _tape_read(daemon, req)
    if op == "import_volume":
        return await _import_volume(daemon, req)
    raise ArchiveError(f"unknown control operation {op!r}")


async def run_job(daemon: ArchiveDaemon, job: TapeJob) -> Any:
    """Queue `job` and wait for a mover to have run it."""
    with daemon.lm.cond:
        in_service = [m.name for m in daemon.lm.movers.values() if not m.down]
    if not in_service:
        raise ArchiveError("no drive in service (see reelfs drives): nothing can read the tape")
    daemon.lm.submit(job)
    try:
        while not job.done.is_set():
            await trio.sleep(0.05)
    except trio.Cancelled:
        job.cancelled = True
        raise
    if job.error is not None:
        raise ArchiveError(job.error)
    return job.result


def _known_volume(daemon: ArchiveDaemon, label: str) -> None:
    if VolumeClerk(daemon.cat).get(label) is None:
        raise ArchiveError(f"volume {label!r} is not in the catalog (see reelfs volumes)")


async def _tape_read(daemon: ArchiveDaemon, req: dict[str, Any]) -> dict[str, Any]:
    label = str(req.get("volume", ""))
    fileno = int(req.get("fileno", -1))
    fifo = Path(str(req.get("fifo", "")))
    run_dir = daemon.config.run_dir.resolve()
    try:
        is_fifo = stat.S_ISFIFO(os.lstat(fifo).st_mode)
    except OSError:
        is_fifo = False
    if fifo.parent.resolve() != run_dir or not is_fifo:
        raise ArchiveError(f"tape_read: 'fifo' must be a FIFO in {run_dir}")
    _known_volume(daemon, label)
    default_layout = daemon.config.library.label_format

    def action(mover: Mover) -> dict[str, Any]:
        # ENXIO here means the reader is gone: an error, never a mover blocked forever
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.set_blocking(fd, True)
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # above the system's limit for this user: the default will do
            return read_data_file(
                mover.drive, mover.cat, label, fileno, fd, default_layout=default_layout
            )
        finally:
            os.close(fd)

    job = TapeJob(volume=label, action=action, what=f"tape read {label} {fileno}")
    return await run_job(daemon, job)


async def _import_volume(daemon: ArchiveDaemon, req: dict[str, Any]) -> dict[str, Any]:
    label = str(req.get("volume", ""))
    directory = str(req.get("directory", ""))
    uid, gid = int(req.get("uid", 0)), int(req.get("gid", 0))
    same_owner = bool(req.get("same_owner", False))
    cfg = daemon.config
    assert daemon.library is not None
    changer = daemon.library.changer

    def prepare() -> None:
        cat = open_catalog(cfg.catalog_path)
        try:
            foreign.check_volume(cat, label)
            foreign.check_target(cat, directory)
            with daemon.changer_lock:
                foreign.prepare_volume(
                    cat,
                    changer,
                    label,
                    media_type=cfg.library.type,
                    capacity=default_capacity(cfg, cat),
                )
        finally:
            cat.close()

    await trio.to_thread.run_sync(prepare)

    def action(mover: Mover) -> dict[str, Any]:
        assert mover.cat is not None
        try:
            scan = foreign.scan_volume(mover.drive)
            rep = foreign.adopt(
                mover.cat,
                cfg.archive_id,
                label,
                directory,
                scan,
                uid=uid,
                gid=gid,
                same_owner=same_owner,
            )
        except Exception as e:
            foreign.import_failed(mover.cat, label, str(e))
            raise
        return rep.__dict__

    job = TapeJob(volume=label, action=action, what=f"import of {label}")
    return await run_job(daemon, job)


def default_capacity(config: Any, cat: Any) -> int:
    """The capacity the catalog gives a cartridge it learns of."""
    configured = config.library.default_capacity
    return configured or int(cat.value("SELECT COALESCE(MAX(capacity),0) FROM volumes") or 0)
