"""The library manager: decides which mover does what next.

Movers ask for work when they are free (`next_work`), under one lock so that two movers
never claim the same requests or the same volume. The policy, in order:

1. recalls for the volume this mover has mounted (ordered by tape position);
2. operator jobs (`TapeJob`: `reelfs tape read`, `reelfs import-volume` while the archive
   is mounted) for the mounted volume or one no other mover holds;
3. recalls for a volume no other mover holds, the oldest waiting first;
4. writes, batched per file family, for families that are due (an urgent request, a
   full batch of large files, the oldest large file older than `flush_delay`, or the
   family's small files making a full aggregate or the oldest older than `[aggregation]
   age`: see backend.library.aggregation), at most `width` volumes of a family being written at
   once; a batch is one aggregate of small files, or large files;
   the volume is chosen by backend.library.selection.

   A family that keeps several tape copies of its files has a *pool* per copy (copy k
   >= 2 in `FAMILY#k`, see backend.catalog.families): requests and volumes carry the pool
   as their family, so all of the above works per pool, each with the family's width.

Recalls come first because a user is waiting on them. Every refusal that needs a human
(no volume left for a family, a volume missing from the library) is an event. Recalls
for a volume that cannot be mounted go to another readable copy when there is one
(backend.library.recall).

The library manager also remembers, per recall request, the tape copies that failed for
it (`note_failed_copy`), so that a recall with several copies tries each once instead of
bouncing between two bad ones.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from backend.catalog import events, families
from backend.catalog.db import Catalog
from backend.catalog.queue import RECALL, WRITE, Request, RequestQueue
from backend.catalog.volumes import (
    EXPORTED,
    MISSING,
    NOACCESS,
    READABLE,
    RETIRED,
    STUCK,
    VolumeClerk,
)
from backend.config import Config
from backend.library import recall, selection
from backend.library.work import JOB, MoverSlot, TapeJob, Work

log = logging.getLogger("reelfs.lm")

#: how often the same "no volume" complaint may be repeated as an event
COMPLAINT_INTERVAL = 300.0
#: how long the list of due families is reused while nothing changes
DUE_CACHE = 1.0

__all__ = ["JOB", "LibraryManager", "MoverSlot", "Request", "TapeJob", "Work"]


@dataclass
class LibraryManager:
    """The scheduler the movers ask for work; see the module docstring."""

    config: Config
    movers: dict[str, MoverSlot] = field(default_factory=dict)
    stopping: bool = False
    drain: bool = False  # flush everything now (umount)

    def __post_init__(self) -> None:
        # `cond` guards the movers' slots, the wake-up generation and the job list, and is
        # only ever held for a moment: threads inside a catalog transaction call wake()
        # (the FUSE front end does). Choosing and claiming work writes the catalog, so it
        # has its own lock, or a mover waiting for SQLite's write lock would hold `cond`
        # against a thread that holds that write lock and waits for `cond`.
        self.cond = threading.Condition()
        self._scheduling = threading.Lock()
        self._complained: dict[str, float] = {}
        self._due_cache: tuple[int, float, list[tuple[str, str]]] | None = None
        self.generation = 0  # bumped on every wake-up, so waiters can tell
        self.jobs: list[TapeJob] = []
        self._failed_copies: dict[int, set[int]] = {}  # recall request -> tape copy ids

    # -- operator jobs and failed copies ---------------------------------------------------

    def submit(self, job: TapeJob) -> None:
        """Queue an operator job; a mover takes it as soon as the volume is free."""
        with self.cond:
            self.jobs.append(job)
            self.generation += 1
            self.cond.notify_all()

    def note_failed_copy(self, request: int, copy: int) -> None:
        with self.cond:
            self._failed_copies.setdefault(request, set()).add(copy)

    def failed_copies(self, request: int) -> frozenset[int]:
        with self.cond:
            return frozenset(self._failed_copies.get(request, ()))

    def forget_request(self, request: int) -> None:
        with self.cond:
            self._failed_copies.pop(request, None)

    # -- signalling ------------------------------------------------------------------------

    def wake(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self.cond:
            gen = self.generation
            self.cond.wait_for(lambda: self.generation != gen or self.stopping, timeout)

    def register(self, name: str) -> MoverSlot:
        with self.cond:
            slot = self.movers.setdefault(name, MoverSlot(name))
            return slot

    def set_volume(self, name: str, volume: str | None) -> None:
        with self.cond:
            self.movers[name].volume = volume

    def finished(self, name: str) -> None:
        with self.cond:
            slot = self.movers[name]
            slot.busy = False
            slot.writing = None
            self.generation += 1
            self.cond.notify_all()

    def set_down(self, name: str) -> None:
        with self.cond:
            self.movers[name].down = True
            self.movers[name].busy = False
            self.movers[name].writing = None
            self.movers[name].volume = None
            self.generation += 1
            self.cond.notify_all()

    # -- scheduling ------------------------------------------------------------------------

    def next_work(self, name: str, cat: Catalog) -> Work | None:
        with self._scheduling:
            if self.stopping:
                return None
            slot = self.movers[name]
            work = self._choose(slot, cat)
            if work is not None:
                with self.cond:
                    slot.busy = True
                    slot.volume = work.volume
                    slot.writing = work.family if work.kind == WRITE else None
                RequestQueue(cat).claim([r.id for r in work.requests], name)
            return work

    def _take_job(self, slot: MoverSlot, in_use: set[str]) -> TapeJob | None:
        """The first job for the mounted volume or a volume nobody holds."""
        with self.cond:
            for j in list(self.jobs):
                if j.cancelled:
                    self.jobs.remove(j)
                elif j.volume == slot.volume or j.volume not in in_use:
                    self.jobs.remove(j)
                    return j
        return None

    def _slots(self) -> list[MoverSlot]:
        """The movers' slots, as they are now (others change them meanwhile)."""
        with self.cond:
            return list(self.movers.values())

    def _in_use(self, slot: MoverSlot) -> set[str]:
        with self.cond:
            return {m.volume for m in self.movers.values() if m is not slot and m.volume}

    def _choose(self, slot: MoverSlot, cat: Catalog) -> Work | None:
        now = time.time_ns()
        in_use = self._in_use(slot)
        if slot.volume:
            reqs = self._recalls_for(cat, slot.volume, now)
            if reqs:
                return Work(RECALL, slot.volume, reqs)
        job = self._take_job(slot, in_use)
        if job is not None:
            return Work(JOB, job.volume, [], job=job)
        for volume in RequestQueue(cat).recall_volumes(now):
            if volume in in_use or volume == slot.volume:
                continue
            if not self._volume_readable(cat, volume):
                continue
            reqs = self._recalls_for(cat, volume, now)
            if reqs:
                return Work(RECALL, volume, reqs)
        return self._write_work(slot, cat, now, in_use)

    def _recalls_for(self, cat: Catalog, volume: str, now: int) -> list[Request]:
        return RequestQueue(cat).recalls_for(volume, now, self.config.mover.batch_files)

    def _volume_readable(self, cat: Catalog, label: str) -> bool:
        vol = VolumeClerk(cat).get(label)
        if vol is not None and vol.state in READABLE:
            return True
        state = "unknown" if vol is None else vol.state
        why = f"volume {label} is {state}" + (f" ({vol.error})" if vol and vol.error else "")
        if vol is None or vol.state in (MISSING, NOACCESS, EXPORTED, RETIRED):
            self._bounce_recalls(cat, label, why)
        elif vol.state == STUCK:
            # back once reconciled: to another copy if there is one, else they wait
            recall.bounce(cat, label, why, keep=True)
        return False

    def _bounce_recalls(self, cat: Catalog, label: str, why: str) -> None:
        failed = recall.bounce(cat, label, why)
        if failed:
            self.on_recall_failed(failed, f"recall failed: {why}")

    def on_recall_failed(self, bitfiles: list[int], why: str) -> None:
        """Hook for the daemon: wake those waiting on these recalls."""

    def _due_families(self, cat: Catalog, now: int) -> list[tuple[str, str]]:
        """(family, which of its files to write now: 'small' or 'large'), most urgent
        first. A batch is either one aggregate of small files or large files only: small
        files first when both are due.

        The answer scans the queue, so it is kept until something changes (a wake-up) or
        for `DUE_CACHE` seconds: idle movers polling a large queue cost almost nothing."""
        cached = self._due_cache
        if (
            cached is not None
            and cached[0] == self.generation
            and time.monotonic() - cached[1] < DUE_CACHE
        ):
            return list(cached[2])
        due = self._compute_due(cat, now)
        self._due_cache = (self.generation, time.monotonic(), due)
        return list(due)

    def _compute_due(self, cat: Catalog, now: int) -> list[tuple[str, str]]:
        delay_ns = int(self.config.mover.flush_delay * 1e9)
        agg = self.config.aggregation
        age_ns = int(agg.age * 1e9)
        # a threshold of 0 (no aggregation) makes every file large
        threshold = agg.threshold if agg.threshold > 0 else -1
        rows = RequestQueue(cat).due_writes(now, threshold)
        due = []
        for r in rows:
            # "a full batch" ([mover] batch_files files of any size waiting) makes the
            # family due as before; the batch itself is then one aggregate or large files
            now_all = (
                r.urgent
                or self.drain
                or r.small_files + r.large_files >= self.config.mover.batch_files
            )
            small = r.small_files > 0 and (
                now_all
                or r.small_bytes >= agg.size
                or r.small_files >= agg.files
                or now - (r.small_oldest_ns or 0) >= age_ns
            )
            large = r.large_files > 0 and (now_all or now - (r.large_oldest_ns or 0) >= delay_ns)
            if small or large:
                due.append((r.family, "small" if small else "large"))
        return due

    def need(self, size: int) -> int:
        return selection.need(size, self.config.library.block_size)

    def width(self, cat: Catalog, pool: str) -> int:
        return families.width(cat, pool, self.config.families)

    def _write_work(self, slot: MoverSlot, cat: Catalog, now: int, in_use: set[str]) -> Work | None:
        due = self._due_families(cat, now)
        if not due:
            return None
        vc = VolumeClerk(cat)
        mounted = vc.get(slot.volume) if slot.volume else None
        # the mounted volume's family first: no tape motion needed
        if mounted is not None:
            due.sort(key=lambda fc: fc[0] != mounted.family)
        for family, which in due:
            writers = sum(1 for m in self._slots() if m is not slot and m.writing == family)
            if writers >= self.width(cat, family):
                continue
            if self._idle_holder(slot, cat, family):
                continue  # the mover holding this family's volume takes it: no extra mount
            reqs = self._write_batch(cat, family, now, which)
            if not reqs:
                continue
            too_big = self._refuse_oversized(cat, reqs)
            if too_big:
                reqs = [r for r in reqs if r.id not in too_big]
                if not reqs:
                    continue
            vol = selection.choose(
                cat,
                family,
                reqs[0],
                block_size=self.config.library.block_size,
                mounted=mounted,
                in_use=in_use,
            )
            if vol is None:
                self._complain(
                    cat,
                    f"family:{family}",
                    f"no writable volume with {self.need(reqs[0].size)} bytes free for family "
                    f"{family}; {len(reqs)} file(s) wait",
                )
                continue
            batch = selection.fit(
                reqs,
                vol,
                threshold=self.config.aggregation.threshold,
                block_size=self.config.library.block_size,
            )
            return Work(WRITE, vol.label, batch, family)
        return None

    def _idle_holder(self, slot: MoverSlot, cat: Catalog, family: str) -> bool:
        """Another mover is idle with a writable volume of `family` mounted."""
        vc = VolumeClerk(cat)
        for m in self._slots():
            if m is slot or m.busy or m.down or not m.volume:
                continue
            v = vc.get(m.volume)
            if v is not None and v.family == family and v.state == "writable":
                return True
        return False

    def _write_batch(
        self, cat: Catalog, family: str, now: int, which: str = "large"
    ) -> list[Request]:
        """The family's next batch: one aggregate of small files (at most `[aggregation]
        files` and `size`), or large files (at most `[mover] batch_files`), in queue
        order, within `[mover] batch_bytes`."""
        agg, mover = self.config.aggregation, self.config.mover
        threshold = agg.threshold if agg.threshold > 0 else -1
        small = which == "small"
        limit, max_bytes = (
            (agg.files, min(agg.size, mover.batch_bytes))
            if small
            else (
                mover.batch_files,
                mover.batch_bytes,
            )
        )
        # large files still changing wait out [mover] flush_delay even when others made
        # the family due (small ones go with their aggregate: it is due by its size too)
        changed_before = None if small or self.drain else now - int(mover.flush_delay * 1e9)
        rows = RequestQueue(cat).write_batch(
            family,
            now,
            small=small,
            threshold=threshold,
            limit=limit,
            changed_before=changed_before,
        )
        out: list[Request] = []
        total = 0
        for req in rows:
            if out and total + req.size > max_bytes:
                break
            out.append(req)
            total += req.size
        return out

    def _refuse_oversized(self, cat: Catalog, reqs: list[Request]) -> set[int]:
        largest = VolumeClerk(cat).largest_capacity()
        refused = {r.id for r in reqs if self.need(r.size) > largest}
        queue = RequestQueue(cat)
        with cat.tx():
            for r in reqs:
                if r.id in refused:
                    msg = (
                        f"file of {r.size} bytes is larger than any volume ({largest} "
                        "bytes with headers): refused, a file must fit on one volume"
                    )
                    queue.fail(r.id, r.bitfile, msg, event="write_refused")
        return refused

    def _complain(self, cat: Catalog, key: str, message: str) -> None:
        last = self._complained.get(key)  # None: never said (monotonic starts at boot)
        if last is not None and time.monotonic() - last < COMPLAINT_INTERVAL:
            return
        self._complained[key] = time.monotonic()
        events.record(cat, "stalled", message, subject=key, level="warning")
