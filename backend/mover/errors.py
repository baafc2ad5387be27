"""The mover's error policy: what a failure of its work means for the drive, the volume
and the requests of the batch.

Errors act on their class (drivers.tape.ErrorClass): media -> the volume is suspect and
the work goes elsewhere (a recall to another copy); drive -> the drive is down and its
work goes to the other drives; end of medium -> the volume is full and the file is
written again on another volume (never split); data protect -> the volume is readonly;
anything else is retried with back-off up to `[mover] retries`. Every decision is an
event.
"""

from __future__ import annotations

import logging

from backend.catalog import events
from backend.catalog.drives import DriveTable
from backend.catalog.queue import RECALL, Request, RequestQueue
from backend.catalog.volumes import FULL, READONLY, SUSPECT, VolumeClerk
from backend.library import recall as policy
from backend.library.work import Work
from backend.mover import mounting
from backend.mover.context import RETRY_DELAY, MoverContext
from backend.mover.recall import CopyReadError, recall_elsewhere
from backend.mover.states import Session
from drivers.tape import ErrorClass, TapeError

log = logging.getLogger("reelfs.mover")


def requeue(
    ctx: MoverContext, pending: list[Request], error: str | None, delay: float = 0.0
) -> None:
    q = RequestQueue(ctx.cat)
    for r in pending:
        q.requeue(r.id, error, delay=delay)
    pending.clear()


def fail_or_requeue(
    ctx: MoverContext,
    work: Work,
    pending: list[Request],
    why: str,
    volume_bad: bool,
    delay: float = RETRY_DELAY,
) -> None:
    """The rest of a batch after a failure. Writes wait and go elsewhere. Recalls: when
    the volume cannot be used, to another copy or failed; after a media error on
    another file of the volume, to another copy or back to the queue (the volume is
    suspect but readable)."""
    if work.kind != RECALL:
        requeue(ctx, pending, why, delay=delay)
        return
    for r in list(pending):
        if volume_bad:
            recall_elsewhere(ctx, r, r.bitfile, why, bad_volume=work.volume)
        elif not _redirect(ctx, r, work.volume, why):
            RequestQueue(ctx.cat).requeue(r.id, why, delay=delay)
    pending.clear()


def _redirect(ctx: MoverContext, req: Request, volume: str, why: str) -> bool:
    """Send a recall to a readable copy on another volume, if there is one."""
    c = policy.next_copy(
        ctx.cat, ctx.config.archive_id, req.bitfile, ctx.lm.failed_copies(req.id), not_on=volume
    )
    if c is None:
        return False
    RequestQueue(ctx.cat).point_at(
        req.id, c.volume, c.fileno, c.block + c.record, why, requeue=True
    )
    return True


def tape_error(ctx: MoverContext, work: Work, pending: list[Request], e: TapeError) -> None:
    cls = e.error_class
    label = work.volume
    log.error("mover %s: %s on %s: %s", ctx.name, work.kind, label, e)
    if cls == ErrorClass.DRIVE:
        drive_down(ctx, str(e))
        requeue(ctx, pending, f"drive {ctx.name} failed: {e.message}")
        return
    vc = VolumeClerk(ctx.cat)
    if cls in (ErrorClass.MEDIA, ErrorClass.BLANK):
        vc.set_state(label, SUSPECT, e.message)
        events.record(
            ctx.cat,
            "volume_suspect",
            f"media error: {e.message}",
            subject=label,
            level="error",
            drive=ctx.name,
            alerts=sorted(e.alerts),
        )
        fail_or_requeue(
            ctx,
            work,
            pending,
            f"media error on {label}: {e.message}",
            volume_bad=not isinstance(e, CopyReadError),
        )
    elif cls == ErrorClass.DATA_PROTECT:
        vc.set_state(label, READONLY, f"write-protected: {e.message}")
        events.record(
            ctx.cat,
            "volume_readonly",
            f"write-protected: {e.message}",
            subject=label,
            level="warning",
        )
        requeue(ctx, pending, None)
    elif cls == ErrorClass.END_OF_MEDIUM:
        vc.set_state(label, FULL, "end of medium")
        events.record(ctx.cat, "volume_full", f"end of medium: {e.message}", subject=label)
        requeue(ctx, pending, None)
    else:
        ctx.event("tape_error", str(e), level="warning", volume=label)
        retryable = [r for r in pending if r.tries < ctx.config.mover.retries]
        exhausted = [r for r in pending if r.tries >= ctx.config.mover.retries]
        requeue(ctx, retryable, str(e), delay=RETRY_DELAY)
        if exhausted:
            fail_or_requeue(ctx, work, exhausted, str(e), False)
    try:
        mounting.dismount(ctx)
    except TapeError as e2:
        if e2.error_class == ErrorClass.DRIVE:
            drive_down(ctx, f"dismount failed: {e2.message}")


def drive_down(ctx: MoverContext, reason: str) -> None:
    """Take the drive out of service: its cartridge out and home if the changer can, the
    library manager told, and the reason recorded. A cartridge that stays in the drive
    is marked `stuck` there: its recalls wait for it (or go to another copy)."""
    ctx.down = True
    ctx.event("drive_down", reason, level="error")
    stuck = None
    try:
        ctx.drive.unload()
    except TapeError:
        pass
    if ctx.mounted:
        try:
            mounting.put_home(ctx, ctx.mounted, None)
        except mounting.ChangerFailed as e:
            stuck = ctx.mounted
            log.error("drive %s down and %s stuck in it: %s", ctx.name, stuck, e)
        except TapeError as e:
            stuck = ctx.mounted
            VolumeClerk(ctx.cat).set_stuck(stuck, f"in drive {ctx.name}", e.message)
            log.error("drive %s down and %s stuck in it: %s", ctx.name, stuck, e)
        # a stuck tape is the business of the next start's cleaner session
        ctx.mounted = None
    # Only now, with the cartridge home (or recorded stuck): until then the volume stays
    # this drive's in the library manager, so no other mover is sent to a tape that is
    # still in this drive.
    ctx.lm.set_down(ctx.name)
    ctx.to(Session.DOWN)
    DriveTable(ctx.cat).set_down(ctx.name, reason, stuck=stuck)
