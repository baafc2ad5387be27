"""Operator jobs in a mover: `reelfs tape read` and `reelfs import-volume` while the
archive is mounted run here, with their volume mounted, so that the daemon stays the only
user of the library."""

from __future__ import annotations

import logging

from backend.catalog import events
from backend.errors import ArchiveError
from backend.library.work import Work
from backend.mover import errors, mounting
from backend.mover.context import MoverContext, VolumeUnavailable
from backend.mover.states import Session
from drivers.tape import ErrorClass, TapeError

log = logging.getLogger("reelfs.mover")


def run_job(ctx: MoverContext, work: Work) -> None:
    """Run an operator's `TapeJob` with its volume mounted; whatever happens, the job
    is told (`done`) and the drive is back in the volume's record mode."""
    assert work.job is not None
    job = work.job
    try:
        if ctx.mounted != job.volume:
            if ctx.mounted:
                mounting.dismount(ctx)
            mounting.mount(ctx, job.volume, check_label=job.check_label)
        ctx.to(Session.TRANSFERRING)
        job.result = job.action(ctx.drive, ctx.cat)
    except TapeError as e:
        job.error = e.message
        events.record(
            ctx.cat,
            "job_failed",
            f"{job.what}: {e.message}",
            subject=job.volume,
            level="error",
            drive=ctx.name,
        )
        if e.error_class == ErrorClass.DRIVE:
            errors.drive_down(ctx, f"{job.what}: {e.message}")
    except Exception as e:
        if not isinstance(e, ArchiveError | OSError | ValueError | VolumeUnavailable):
            log.exception("mover %s: %s failed", ctx.name, job.what)
        job.error = str(e)
    finally:
        if ctx.mounted and not ctx.down:
            try:
                ctx.drive.set_block_size(ctx.record_mode)
            except TapeError:
                pass
        job.done.set()
