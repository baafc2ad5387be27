"""A mover: one thread per tape drive, running CTA-style sessions.

The thread's life: register the drive, run a *cleaner session* (a cartridge the changer
shows in the drive, left by a crash, is unloaded and put home before anything else),
then loop: clean the drive between sessions when it asked for it, take the next work
from the library manager and run it (a recall, a write, or an operator's tape job),
keep the tape mounted a while for more work (`[mover] idle_dismount`), dismount when
idle or when the operator asks. Whatever happens, the mover still tries to put its tape
home when it stops.

The session states and their moves are backend.mover.states; mounting, the transfers,
jobs, cleaning and the error policy are the sibling modules. An unexpected error in a
piece of work requeues the work and resets the drive; only a mover that keeps failing
(`MAX_FAILURES` in a row) takes its drive down.
"""

from __future__ import annotations

import logging
import threading
import time

from backend.catalog import events
from backend.catalog.db import open_catalog
from backend.catalog.drives import DriveTable
from backend.catalog.queue import RECALL
from backend.library import cleaning as cleaning_policy
from backend.library.work import JOB, Work
from backend.mover import cleaning, errors, jobs, mounting
from backend.mover.context import RETRY_DELAY, MoverContext, MoverHooks, VolumeUnavailable
from backend.mover.mounting import LabelMismatch, VolumeBusy
from backend.mover.recall import recall_batch
from backend.mover.states import Session
from backend.mover.write import write_batch
from drivers.tape import ErrorClass, TapeError

log = logging.getLogger("reelfs.mover")

MAX_FAILURES = 3  # unexpected errors in a row before the mover takes its drive down

__all__ = ["MAX_FAILURES", "Mover", "MoverContext", "MoverHooks"]


class Mover(threading.Thread):
    """The thread of one drive; its shared state is `ctx` (backend.mover.context), which
    the daemon also reads for `status` and sets to steer it (`down`,
    `dismount_requested`)."""

    def __init__(self, ctx: MoverContext) -> None:
        super().__init__(name=f"mover-{ctx.name}", daemon=True)
        self.ctx = ctx
        ctx.lm.register(ctx.name)

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        ctx = self.ctx
        ctx.cat = open_catalog(ctx.config.catalog_path)
        drives = DriveTable(ctx.cat)
        try:
            drives.register(ctx.name, ctx.address, getattr(ctx.drive, "serial", ""))
            if drives.is_down(ctx.name):
                ctx.lm.set_down(ctx.name)
                return
            mounting.cleaner_session(ctx)
            cleaning.check_drive(ctx)
            self._loop()
        except Exception:
            log.exception("mover %s crashed", ctx.name)
            events.record(
                ctx.cat,
                "mover_crashed",
                "mover thread stopped on an unexpected error",
                subject=ctx.name,
                level="error",
            )
        finally:
            try:
                if ctx.mounted:
                    mounting.dismount(ctx)
            except Exception as e:
                log.error("mover %s: could not dismount %s at exit: %s", ctx.name, ctx.mounted, e)
            if not ctx.down:
                ctx.to(Session.IDLE)
            ctx.cat.close()

    def _loop(self) -> None:
        ctx = self.ctx
        idle_dismount = ctx.config.mover.idle_dismount
        while not ctx.lm.stopping and not ctx.down:
            if cleaning_policy.needed(ctx.cat, ctx.name):
                self._clean()  # between sessions, before any new work
                if ctx.down:
                    break
            work = ctx.lm.next_work(ctx.name, ctx.cat)
            if work is None:
                if ctx.mounted and (ctx.dismount_requested or ctx.idle_for() >= idle_dismount):
                    mounting.dismount(ctx)
                ctx.dismount_requested = False
                wait = 1.0
                if ctx.mounted:
                    wait = max(0.05, idle_dismount - ctx.idle_for())
                ctx.lm.wait(min(wait, 1.0))
                continue
            try:
                self.execute(work)
            finally:
                ctx.last_activity = time.monotonic()
                ctx.lm.finished(ctx.name)
            if not ctx.down:
                # CTA's "mounted, idle": the tape stays for a while in case more comes
                ctx.to(Session.MOUNTED if ctx.mounted else Session.IDLE)

    def _clean(self) -> None:
        ctx = self.ctx
        if ctx.mounted:
            mounting.dismount(ctx)
        try:
            cleaning.clean_session(ctx, ctx.config.library.cleaning_uses)
        except TapeError as e:
            log.error("mover %s: cleaning failed: %s", ctx.name, e)
            ctx.event("cleaning_failed", str(e), level="error")
            if e.error_class == ErrorClass.DRIVE:
                errors.drive_down(ctx, f"cleaning failed: {e.message}")
            else:
                cleaning_policy.mark_done(ctx.cat, ctx.name)

    # -- work ------------------------------------------------------------------------------

    def execute(self, work: Work) -> None:
        ctx = self.ctx
        if work.kind == JOB:
            jobs.run_job(ctx, work)
            return
        pending = list(work.requests)
        try:
            if ctx.hooks.fault("mover"):
                raise RuntimeError("injected fault in the mover")
            if ctx.mounted != work.volume:
                if ctx.mounted:
                    mounting.dismount(ctx)
                mounting.mount(ctx, work.volume)
            if work.kind == RECALL:
                recall_batch(ctx, work, pending)
            else:
                write_batch(ctx, work, pending)
        except LabelMismatch as e:
            # the volume is out of service now: the work goes elsewhere without delay
            errors.fail_or_requeue(ctx, work, pending, str(e), volume_bad=True, delay=0.0)
        except VolumeBusy as e:
            # another drive still holds the cartridge (putting it home): the work waits
            # for it, it is not the volume's fault
            errors.requeue(ctx, pending, str(e), delay=RETRY_DELAY)
        except VolumeUnavailable as e:
            errors.fail_or_requeue(ctx, work, pending, str(e), volume_bad=True)
        except TapeError as e:
            errors.tape_error(ctx, work, pending, e)
        except Exception as e:
            # a bug must not take the drive's mover away for good: requeue, reset the
            # drive, carry on; only a mover that keeps failing takes its drive down
            log.exception("mover %s: %s work on %s failed", ctx.name, work.kind, work.volume)
            errors.requeue(ctx, pending, f"unexpected error: {e}", delay=RETRY_DELAY)
            ctx.failures += 1
            ctx.event(
                "mover_error",
                f"unexpected error: {e!r}",
                level="error",
                volume=work.volume,
                in_a_row=ctx.failures,
            )
            if ctx.failures >= MAX_FAILURES:
                errors.drive_down(ctx, f"the mover failed {ctx.failures} times in a row: {e!r}")
                return
            try:
                mounting.dismount(ctx)
            except Exception:
                log.exception("mover %s: dismount after an unexpected error", ctx.name)
        else:
            ctx.failures = 0
