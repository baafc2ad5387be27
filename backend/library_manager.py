"""The library manager: decides which mover does what next.

Movers ask for work when they are free (`next_work`), under one lock so that two movers
never claim the same requests or the same volume. The policy, in order:

1. recalls for the volume this mover has mounted (ordered by tape position);
2. recalls for a volume no other mover holds, the oldest waiting first;
3. writes, batched per file family, for families that are due (an urgent request,
   the oldest older than `flush_delay`, or a full batch), at most `width` volumes of a
   family being written at once; the mounted volume is preferred, then the family's
   fullest volume with room, then the oldest blank volume of the common pool.

Recalls come first because a user is waiting on them. Every refusal that needs a human
(no volume left for a family, a volume missing from the library) is an event.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.queue import QUEUED, RECALL, WRITE, RequestQueue
from backend.catalog.volumes import (
    EXPORTED,
    MISSING,
    NOACCESS,
    READABLE,
    RETIRED,
    VolumeClerk,
)
from backend.config import Config

log = logging.getLogger("reelfs.lm")

#: how often the same "no volume" complaint may be repeated as an event
COMPLAINT_INTERVAL = 300.0


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
class Work:
    kind: str  # write | recall
    volume: str
    requests: list[Request]
    family: str | None = None


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
        self.cond = threading.Condition()
        self._complained: dict[str, float] = {}
        self.generation = 0  # bumped on every wake-up, so waiters can tell

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
        with self.cond:
            if self.stopping:
                return None
            slot = self.movers[name]
            work = self._choose(slot, cat)
            if work is not None:
                slot.busy = True
                slot.volume = work.volume
                slot.writing = work.family if work.kind == WRITE else None
                RequestQueue(cat).claim([r.id for r in work.requests], name)
            return work

    def _in_use(self, slot: MoverSlot) -> set[str]:
        return {m.volume for m in self.movers.values() if m is not slot and m.volume}

    def _choose(self, slot: MoverSlot, cat: Catalog) -> Work | None:
        now = time.time_ns()
        in_use = self._in_use(slot)
        if slot.volume:
            reqs = self._recalls_for(cat, slot.volume, now)
            if reqs:
                return Work(RECALL, slot.volume, reqs)
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
        """Requests for a volume that cannot be mounted fail now with a clear error."""
        with cat.tx():
            rows = cat.all(
                "SELECT id, bitfile FROM requests WHERE kind=? AND volume=?", (RECALL, label)
            )
            for rid, bitfile in rows:
                cat.execute(
                    "UPDATE bitfiles SET error=? WHERE id=?", (f"recall failed: {why}", bitfile)
                )
                cat.execute("DELETE FROM requests WHERE id=?", (rid,))
            if rows:
                events.record(
                    cat,
                    "recall_bounced",
                    f"{len(rows)} recall(s) refused: {why}",
                    subject=label,
                    level="error",
                )
        if rows:
            self.on_recall_failed([b for _, b in rows], f"recall failed: {why}")

    def on_recall_failed(self, bitfiles: list[int], why: str) -> None:
        """Hook for the daemon: wake those waiting on these recalls."""

    def _due_families(self, cat: Catalog, now: int) -> list[tuple[str, int]]:
        delay_ns = int(self.config.mover.flush_delay * 1e9)
        rows = cat.all(
            "SELECT r.family, MIN(r.created_ns), MAX(r.urgent), COUNT(*) "
            "FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.not_before_ns<=? AND b.writers=0 "
            "GROUP BY r.family ORDER BY MAX(r.urgent) DESC, MIN(r.created_ns)",
            (WRITE, QUEUED, now),
        )
        due = []
        for family, oldest, urgent, count in rows:
            if (
                urgent
                or self.drain
                or now - oldest >= delay_ns
                or count >= self.config.mover.batch_files
            ):
                due.append((family, count))
        return due

    def width(self, cat: Catalog, family: str) -> int:
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
        for family, _count in due:
            writers = sum(1 for m in self.movers.values() if m is not slot and m.writing == family)
            if writers >= self.width(cat, family):
                continue
            if self._idle_holder(slot, cat, family):
                continue  # the mover holding this family's volume takes it: no extra mount
            reqs = self._write_batch(cat, family, now)
            if not reqs:
                continue
            need = reqs[0].size
            too_big = self._refuse_oversized(cat, reqs)
            if too_big:
                reqs = [r for r in reqs if r.id not in too_big]
                if not reqs:
                    continue
                need = reqs[0].size
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
                if r.size > room and batch:
                    break
                batch.append(r)
                room -= r.size
            return Work(WRITE, vol.label, batch, family)
        return None

    def _idle_holder(self, slot: MoverSlot, cat: Catalog, family: str) -> bool:
        """Another mover is idle with a writable volume of `family` mounted."""
        vc = VolumeClerk(cat)
        for m in self.movers.values():
            if m is slot or m.busy or m.down or not m.volume:
                continue
            v = vc.get(m.volume)
            if v is not None and v.family == family and v.state == "writable":
                return True
        return False

    def _write_batch(self, cat: Catalog, family: str, now: int) -> list[Request]:
        rows = cat.all(
            "SELECT r.id, r.kind, r.bitfile, r.family, r.volume, r.fileno, r.block, b.size, "
            "r.tries FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.family=? AND r.not_before_ns<=? "
            "AND b.writers=0 ORDER BY r.id LIMIT ?",
            (WRITE, QUEUED, family, now, self.config.mover.batch_files),
        )
        out: list[Request] = []
        total = 0
        for r in rows:
            req = Request(*r)
            if out and total + req.size > self.config.mover.batch_bytes:
                break
            out.append(req)
            total += req.size
        return out

    def _refuse_oversized(self, cat: Catalog, reqs: list[Request]) -> set[int]:
        largest = VolumeClerk(cat).largest_capacity()
        refused = {r.id for r in reqs if r.size > largest}
        if refused:
            with cat.tx():
                for r in reqs:
                    if r.id in refused:
                        msg = f"file of {r.size} bytes is larger than any volume ({largest})"
                        cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, r.bitfile))
                        cat.execute("DELETE FROM requests WHERE id=?", (r.id,))
                        events.record(
                            cat, "write_refused", msg, subject=str(r.bitfile), level="error"
                        )
        return refused

    def _complain(self, cat: Catalog, key: str, message: str) -> None:
        last = self._complained.get(key, 0.0)
        if time.monotonic() - last < COMPLAINT_INTERVAL:
            return
        self._complained[key] = time.monotonic()
        events.record(cat, "stalled", message, subject=key, level="warning")
