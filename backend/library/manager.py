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
   age`: see backend.aggregation), at most `width` volumes of a family being written at
   once; a batch is one aggregate of small files, or large files;
   the mounted volume is preferred, then the family's fullest volume with room, then the
   oldest blank volume of the common pool. A file goes only to a volume with room for
   it (its size plus two records for headers, padding and labels).

   A family that keeps several tape copies of its files has a *pool* per copy (copy k
   >= 2 in `FAMILY#k`, see backend.catalog.pools): requests and volumes carry the pool
   as their family, so all of the above works per pool, each with the family's width.

Recalls come first because a user is waiting on them. Every refusal that needs a human
(no volume left for a family, a volume missing from the library) is an event. Recalls
for a volume that cannot be mounted go to another readable copy when there is one.

The library manager also remembers, per recall request, the tape copies that failed for
it (`note_failed_copy`), so that a recall with several copies tries each once instead of
bouncing between two bad ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import family_of_pool
from backend.catalog.queue import QUEUED, RECALL, RUNNING, WRITE
from backend.catalog.volumes import (
    EXPORTED,
    MISSING,
    NOACCESS,
    READABLE,
    RETIRED,
    VolumeClerk,
)
from backend.config import Config
from backend.tape.aggregation import is_small

log = logging.getLogger("reelfs.lm")

#: how often the same "no volume" complaint may be repeated as an event
COMPLAINT_INTERVAL = 300.0
#: how long the list of due families is reused while nothing changes
DUE_CACHE = 1.0
JOB = "job"
#: an aggregated member's pax and ustar headers (with a long path) and padding, at most
MEMBER_OVERHEAD = 8192


@dataclass
class Request:
    id: int
    kind: str
    bitfile: int
    family: str | None
    volume: str | None
    fileno: int | None
    block: int | None
    size: int
    tries: int


@dataclass
class TapeJob:
    """Operator work that needs one volume in a drive, run by a free mover in its thread.

    `action(mover)` runs with `volume` mounted (`check_label`: with the label check of a
    normal mount); its return value lands in `result`, the text of an exception in
    `error`, and `done` is set either way. A job still waiting when `cancelled` is set
    is dropped.
    """

    volume: str
    action: Callable[[Any], Any]
    what: str
    check_label: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str | None = None
    cancelled: bool = False


@dataclass
class Work:
    kind: str  # write | recall | job
    volume: str
    requests: list[Request]
    family: str | None = None
    job: TapeJob | None = None


@dataclass
class MoverSlot:
    """What the library manager knows of one mover."""

    name: str
    volume: str | None = None  # mounted or being mounted
    writing: str | None = None  # family it is writing for
    busy: bool = False
    down: bool = False


@dataclass
class LibraryManager:
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
                # RequestQueue.claim, in one statement: a batch may be thousands of files
                started = time.time_ns()
                with cat.tx():
                    cat.conn.executemany(
                        "UPDATE requests SET state=?, drive=?, started_ns=?, tries=tries+1 "
                        "WHERE id=?",
                        [(RUNNING, name, started, r.id) for r in work.requests],
                    )
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
        for (volume,) in cat.all(
            "SELECT volume FROM requests WHERE kind=? AND state=? AND not_before_ns<=? "
            "GROUP BY volume ORDER BY MAX(urgent) DESC, MIN(created_ns)",
            (RECALL, QUEUED, now),
        ):
            if volume in in_use or volume == slot.volume:
                continue
            if not self._volume_readable(cat, volume):
                continue
            reqs = self._recalls_for(cat, volume, now)
            if reqs:
                return Work(RECALL, volume, reqs)
        return self._write_work(slot, cat, now, in_use)

    def _recalls_for(self, cat: Catalog, volume: str, now: int) -> list[Request]:
        rows = cat.all(
            "SELECT r.id, r.kind, r.bitfile, r.family, r.volume, r.fileno, r.block, b.size, "
            "r.tries FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.volume=? AND r.not_before_ns<=? "
            "ORDER BY r.fileno, r.block LIMIT ?",
            (RECALL, QUEUED, volume, now, self.config.mover.batch_files),
        )
        return [Request(*r) for r in rows]

    def _volume_readable(self, cat: Catalog, label: str) -> bool:
        vol = VolumeClerk(cat).get(label)
        if vol is not None and vol.state in READABLE:
            return True
        state = "unknown" if vol is None else vol.state
        why = f"volume {label} is {state}" + (f" ({vol.error})" if vol and vol.error else "")
        if vol is None or vol.state in (MISSING, NOACCESS, EXPORTED, RETIRED):
            self._bounce_recalls(cat, label, why)
        return False

    def _bounce_recalls(self, cat: Catalog, label: str, why: str) -> None:
        """Requests for a volume that cannot be mounted go to another readable copy, or
        fail now with a clear error."""
        failed: list[int] = []
        moved = 0
        with cat.tx():
            rows = cat.all(
                "SELECT id, bitfile FROM requests WHERE kind=? AND volume=?", (RECALL, label)
            )
            for rid, bitfile in rows:
                other = cat.one(
                    "SELECT c.volume, c.fileno, c.block + c.record FROM tape_copies c "
                    "JOIN volumes v ON v.label = c.volume WHERE c.bitfile=? AND "
                    f"c.state='active' AND c.volume != ? AND v.state IN ({_READABLE_SQL}) "
                    "ORDER BY c.copy, c.id LIMIT 1",
                    (bitfile, label),
                )
                if other is not None:
                    cat.execute(
                        "UPDATE requests SET volume=?, fileno=?, block=?, error=? WHERE id=?",
                        (*other, why, rid),
                    )
                    moved += 1
                    continue
                cat.execute(
                    "UPDATE bitfiles SET error=? WHERE id=?", (f"recall failed: {why}", bitfile)
                )
                cat.execute("DELETE FROM requests WHERE id=?", (rid,))
                failed.append(bitfile)
            if failed:
                events.record(
                    cat,
                    "recall_bounced",
                    f"{len(failed)} recall(s) refused: {why}",
                    subject=label,
                    level="error",
                )
            if moved:
                events.record(
                    cat,
                    "recall_redirected",
                    f"{moved} recall(s) sent to another copy: {why}",
                    subject=label,
                    level="warning",
                )
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
        rows = cat.all(
            "SELECT r.family, MAX(r.urgent), "
            "SUM(b.size < ?), MIN(CASE WHEN b.size < ? THEN r.created_ns END), "
            "COALESCE(SUM(CASE WHEN b.size < ? THEN b.size END), 0), "
            "SUM(b.size >= ?), MIN(CASE WHEN b.size >= ? THEN r.created_ns END) "
            "FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.not_before_ns<=? AND b.writers=0 "
            "GROUP BY r.family ORDER BY MAX(r.urgent) DESC, MIN(r.created_ns)",
            (threshold,) * 5 + (WRITE, QUEUED, now),
        )
        due = []
        for family, urgent, n_small, small_oldest, small_bytes, n_large, large_oldest in rows:
            # "a full batch" ([mover] batch_files files of any size waiting) makes the
            # family due as before; the batch itself is then one aggregate or large files
            now_all = urgent or self.drain or n_small + n_large >= self.config.mover.batch_files
            small = n_small > 0 and (
                now_all
                or small_bytes >= agg.size
                or n_small >= agg.files
                or now - small_oldest >= age_ns
            )
            large = n_large > 0 and (now_all or now - large_oldest >= delay_ns)
            if small or large:
                due.append((family, "small" if small else "large"))
        return due

    def need(self, size: int) -> int:
        """Bytes of volume a file of `size` takes: its headers, the padding of its last
        record and, on a labelled volume, the labels around its tape file fit in two more
        records."""
        return size + 2 * self.config.library.block_size

    def _share(self, size: int) -> int:
        """What a file adds to a batch's tape use: an aggregated member costs its headers
        (the path included, 8 KiB is plenty), any other file a tape file of its own."""
        if is_small(size, self.config.aggregation.threshold):
            return size + MEMBER_OVERHEAD
        return self.need(size)

    def width(self, cat: Catalog, pool: str) -> int:
        """How many volumes of a pool are written at once: its family's width (each copy
        of a family has a pool of its own, backend.catalog.pools)."""
        family = family_of_pool(pool)
        w = cat.value("SELECT width FROM families WHERE name=?", (family,))
        if w is None:
            w = self.config.families.get(family, 1)
        return max(1, int(w))

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
            need = self.need(reqs[0].size)
            vol = None
            if (
                mounted is not None
                and mounted.state == "writable"
                and mounted.family == family
                and mounted.free >= need
            ):
                vol = mounted
            if vol is None:
                exclude = in_use
                vol = vc.for_write(family, need, exclude)
            if vol is None:
                group = cat.value(
                    "SELECT storage_group FROM bitfiles WHERE id=?", (reqs[0].bitfile,)
                )
                vol = vc.draw_blank(family, group, need, in_use)
                if vol is not None:
                    events.record(
                        cat,
                        "volume_assigned",
                        f"blank volume given to family {family}",
                        subject=vol.label,
                        family=family,
                    )
            if vol is None:
                self._complain(
                    cat,
                    f"family:{family}",
                    f"no writable volume with {need} bytes free for family {family}; "
                    f"{len(reqs)} file(s) wait",
                )
                continue
            # keep the batch within what the volume can take
            room = vol.free
            batch: list[Request] = []
            for r in reqs:
                if self._share(r.size) > room and batch:
                    break
                batch.append(r)
                room -= self._share(r.size)
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
        rows = cat.all(
            "SELECT r.id, r.kind, r.bitfile, r.family, r.volume, r.fileno, r.block, b.size, "
            "r.tries FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.family=? AND r.not_before_ns<=? "
            f"AND b.writers=0 AND b.size {'<' if small else '>='} ? ORDER BY r.id LIMIT ?",
            (WRITE, QUEUED, family, now, threshold, limit),
        )
        out: list[Request] = []
        total = 0
        for r in rows:
            req = Request(*r)
            if out and total + req.size > max_bytes:
                break
            out.append(req)
            total += req.size
        return out

    def _refuse_oversized(self, cat: Catalog, reqs: list[Request]) -> set[int]:
        largest = VolumeClerk(cat).largest_capacity()
        refused = {r.id for r in reqs if self.need(r.size) > largest}
        if refused:
            with cat.tx():
                for r in reqs:
                    if r.id in refused:
                        msg = (
                            f"file of {r.size} bytes is larger than any volume ({largest} "
                            "bytes with headers): refused, a file must fit on one volume"
                        )
                        cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, r.bitfile))
                        cat.execute("DELETE FROM requests WHERE id=?", (r.id,))
                        events.record(
                            cat, "write_refused", msg, subject=str(r.bitfile), level="error"
                        )
        return refused

    def _complain(self, cat: Catalog, key: str, message: str) -> None:
        last = self._complained.get(key)  # None: never said (monotonic starts at boot)
        if last is not None and time.monotonic() - last < COMPLAINT_INTERVAL:
            return
        self._complained[key] = time.monotonic()
        events.record(cat, "stalled", message, subject=key, level="warning")


_READABLE_SQL = ",".join(f"'{s}'" for s in READABLE)
