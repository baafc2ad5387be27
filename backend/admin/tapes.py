"""Tapes as tapes: `reelfs tape read`, `reelfs import-volume`, `reelfs rebuild-catalog`.

Handlers for backend.admin.context. While the archive is mounted a volume is read by a
free mover (a `TapeJob`, ahead of queued work); when it is not, the command puts the
cartridge in a free drive itself. `tape_read` streams the data file through a FIFO the
client made in the archive's `run/` directory (the control socket carries JSON, not
gigabytes): it is opened without blocking, so a client that went away is an error, not
a hung drive. `rebuild_catalog` replaces the catalog, so it only runs with the archive
unmounted.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any

from backend.admin.context import AdminContext
from backend.catalog.db import Catalog
from backend.catalog.volumes import VolumeClerk
from backend.errors import ArchiveError
from backend.tape import foreign
from backend.tape.read import read_data_file
from backend.tape.rebuild import rebuild
from drivers.tape import TapeDrive

#: a larger pipe keeps the drive streaming while the reader catches up
PIPE_SIZE = 1 << 20


def tape_read(ctx: AdminContext, volume: str, fileno: int, fifo: str) -> dict[str, Any]:
    """Every record of data file `fileno` of `volume`, into the FIFO `fifo`."""
    path = Path(fifo)
    run_dir = ctx.config.run_dir.resolve()
    try:
        is_fifo = stat.S_ISFIFO(os.lstat(path).st_mode)
    except OSError:
        is_fifo = False
    if path.parent.resolve() != run_dir or not is_fifo:
        raise ArchiveError(f"tape read: 'fifo' must be a FIFO in {run_dir}")
    default_layout = ctx.config.library.label_format

    def action(drive: TapeDrive, cat: Catalog) -> dict[str, Any]:
        # ENXIO here means the reader is gone: an error, never a drive blocked forever
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.set_blocking(fd, True)
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # above the system's limit for this user: the default will do
            return read_data_file(drive, cat, volume, fileno, fd, default_layout=default_layout)
        finally:
            os.close(fd)

    return ctx.with_volume(volume, action, what=f"tape read {volume} {fileno}")


def import_volume(
    ctx: AdminContext,
    volume: str,
    directory: str,
    uid: int,
    gid: int,
    same_owner: bool = False,
) -> dict[str, Any]:
    """Adopt a tape written by others (tar, pax, cpio) as a read-only volume."""
    cat, cfg = ctx.cat, ctx.config
    foreign.check_volume(cat, volume)
    foreign.check_target(cat, directory)
    with ctx.changer() as changer:
        foreign.prepare_volume(
            cat,
            changer,
            volume,
            media_type=cfg.library.type,
            capacity=VolumeClerk(cat).default_capacity(cfg.library.default_capacity),
        )
    try:
        scan = ctx.with_volume(
            volume, lambda drive, _cat: foreign.scan_volume(drive), what=f"import of {volume}"
        )
        rep = foreign.adopt(
            cat,
            cfg.archive_id,
            volume,
            directory,
            scan,
            uid=uid,
            gid=gid,
            same_owner=same_owner,
        )
    except Exception as e:
        foreign.import_failed(cat, volume, str(e))
        raise
    return rep.__dict__


def rebuild_catalog(ctx: AdminContext, force: bool = False) -> dict[str, Any]:
    """Read every volume and write a new catalog from what the tapes say."""
    return rebuild(ctx.config, force=force, progress=ctx.progress).as_dict()
