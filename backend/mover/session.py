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
error (a bug, a busy catalog, a changer failure) goes to the mover's supervisor
(backend.supervision): a busy catalog pauses the mover until it is free, a crash
requeues what it held and restarts it through a cleaner session, and a mover that keeps
crashing (`[mover] max_restarts` in `restart_window`) takes its drive down with the
reason.
"""

from __future__ import annotations

import logging
import threading
import time

from backend.catalog.db import open_catalog
from backend.catalog.drives import DriveTable
from backend.catalog.queue import RECALL, RequestQueue
from backend.library import cleaning as cleaning_policy
from backend.library.work import JOB, Work
from backend.mover import cleaning, errors, jobs, mounting
from backend.mover.context import RETRY_DELAY, MoverContext, MoverHooks, VolumeUnavailable
from backend.mover.mounting import LabelMismatch, VolumeBusy
from backend.mover.recall import recall_batch
from backend.mover.states import Session
from backend.mover.write import write_batch
from backend.supervision import RestartPolicy, Supervisor
from drivers.tape import ErrorClass, TapeError

log = logging.getLogger("reelfs.mover")

__all__ = ["Mover", "MoverContext", "MoverHooks"]


class Mover(threading.Thread):
    """The thread of one drive; its shared state is `ctx` (backend.mover.context), which
    the daemon also reads for `status` and sets to steer it (`down`,
    `dismount_requested`)."""

    def __init__(self, ctx: MoverContext) -> None:
        super().__init__(name=f"mover-{ctx.name}", daemon=True)
        self.ctx = ctx
        self._fresh = True  # the next run starts with a cleaner session
        self._in_work = False  # between taking work and finishing it
        ctx.lm.register(ctx.name)

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        ctx = self.ctx
        ctx.cat = open_catalog(ctx.config.catalog_path)
        mc = ctx.config.mover
        self.supervisor = Supervisor(
            ctx.health,
            cat=lambda: ctx.cat,
            stopping=lambda: ctx.lm.stopping or ctx.down,
            policy=RestartPolicy(mc.max_restarts, mc.restart_window),
            subject=ctx.name,
            crash_event="mover_error",
        )
        try:
            self.supervisor.run(
                self._body, restart=self._restart, resume=self._resume, give_up=self._give_up
            )
        finally:
            try:
                if ctx.mounted:
                    mounting.dismount(ctx)
            except Exception as e:
                log.error("mover %s: could not dismount %s at exit: %s", ctx.name, ctx.mounted, e)
            try:
                if not ctx.down:
                    ctx.to(Session.IDLE)
            except Exception as e:
                log.error("mover %s: could not record its end: %s", ctx.name, e)
            ctx.cat.close()

    def _body(self) -> None:
        """One run of the mover: a cleaner session first (at start and after a crash),
        then the loop until the daemon stops or the drive goes down."""
        ctx = self.ctx
        if self._fresh:
            drives = DriveTable(ctx.cat)
            drives.register(ctx.name, ctx.address, getattr(ctx.drive, "serial", ""))
            if drives.is_down(ctx.name):
                ctx.lm.set_down(ctx.name)
                ctx.down = True
                return
            mounting.cleaner_session(ctx)
            cleaning.check_drive(ctx)
            self._fresh = False
        self._loop()

    def _restart(self, error: str) -> None:
        """After a crash: what the mover held goes back to the queue, its session starts
        afresh from idle, and the next run's cleaner session puts its tape home."""
        ctx = self.ctx
        self._fresh = True
        self._in_work = False
        ctx.lm.finished(ctx.name)
        RequestQueue(ctx.cat).requeue_claimed(
            ctx.name, f"mover {ctx.name} restarted: {error}", delay=RETRY_DELAY
        )
        ctx.mounted = None  # the cleaner session finds the cartridge through the changer
        if ctx.state.state != Session.DOWN:
            ctx.to(Session.IDLE)

    def _resume(self) -> None:
        """After a busy catalog: a mover that was idle (with or without its tape) simply
        carries on; one caught in the middle of work starts over as after a crash, so no
        request stays claimed and no tape half-positioned."""
        if self._in_work or self.ctx.state.state not in (Session.IDLE, Session.MOUNTED):
            self._restart("the catalog was busy")

    def _give_up(self, reason: str) -> None:
        ctx = self.ctx
        try:
            RequestQueue(ctx.cat).requeue_claimed(ctx.name, f"drive {ctx.name} down: {reason}")
        finally:
            errors.drive_down(ctx, reason)

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
            self._in_work = True
            try:
                self.execute(work)
            finally:
                ctx.last_activity = time.monotonic()
                ctx.lm.finished(ctx.name)
            self._in_work = False
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
        # Anything else (a bug, a busy catalog, a changer that failed putting a tape home)
        # goes to the mover's supervisor (backend.supervision): a busy catalog is waited
        # for, a crash restarts the mover through a cleaner session, with the requests it
        # held put back, and a mover that keeps crashing takes its drive down.
