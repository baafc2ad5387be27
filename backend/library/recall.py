"""Recall policy: which tape copy a recall reads, and where it goes when that copy fails.

Shared by the mount (open of a released file), the operator's `reelfs recall`, the HTTP
data service, the library manager and the movers; the library manager orders what is
queued by volume and tape position, and backend.mover.recall does the reading.

* `queue_recall`: the first good copy on a readable volume is read, one on a `suspect`
  volume last; with none, the file gets its error at once (and EIO for whoever waits).
* `next_copy`: after a copy failed (checksum mismatch, media error, volume that cannot
  be mounted), the next good copy on a readable volume not tried yet for this request.
* `failure`: the message a recall fails with when no copy is left.
* `bounce`: every recall of a volume that cannot be mounted (missing, noaccess,
  exported, retired) goes to another copy, or fails now with the volume's state.
* `give_up` and `expire`: no wait without a deadline. A recall queued longer than
  `[cache] recall_timeout` fails with the reason it waits (backend.library.diagnosis)
  when something blocks it (no drive up, volume unavailable, cache full); one that only
  waits its turn stays queued (a bulk `reelfs recall` goes on), but an open() waiting for
  it gets ETIMEDOUT at its own deadline. Each gives a `recall_timeout` event.
"""

from __future__ import annotations

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import RELEASED, FileClerk, TapeCopy
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import READABLE, STUCK, SUSPECT, VolumeClerk
from backend.config import Config
from backend.errors import ArchiveError
from backend.library import diagnosis
from backend.library.diagnosis import Reason


def queue_recall(cat: Catalog, archive_id: str, bitfile: int, *, urgent: bool = True) -> bool:
    """Queue a recall of `bitfile` unless one is queued; True if the file needs one at all.

    Raises ArchiveError when no copy can be read (the reason is also stored on the file).
    """
    files = FileClerk(cat, archive_id)
    with cat.tx():
        bf = files.get(bitfile)
        if bf is None or bf.state != RELEASED:
            return False
        vc = VolumeClerk(cat)
        copies = files.copies(bitfile)
        states = {c.volume: getattr(vc.get(c.volume), "state", None) for c in copies}
        # a copy on a volume that gave a media error is read last, when it is the only one;
        # a `stuck` volume (the changer failed moving it) is back once reconciled: its
        # recall waits for it rather than fail, when it holds the only copy
        for c in sorted(
            copies, key=lambda c: (states[c.volume] == STUCK, states[c.volume] == SUSPECT)
        ):
            if states[c.volume] in READABLE or states[c.volume] == STUCK:
                RequestQueue(cat).enqueue_recall(
                    bitfile, c.volume, c.fileno, c.block + c.record, urgent=urgent
                )
                files.set_error(bitfile, None)
                return True
        bad = files.bad_copies(bitfile)
        if copies:
            where = ", ".join(f"{c.volume} {states[c.volume] or 'unknown'}" for c in copies)
            why = f"recall failed: no readable copy ({where})"
        elif bad:
            why = f"recall failed: no good copy left ({len(bad)} bad: {', '.join(bad)})"
        else:
            why = "recall failed: no tape copy recorded"
        files.set_error(bitfile, why)
    raise ArchiveError(why)


def next_copy(
    cat: Catalog,
    archive_id: str,
    bitfile: int,
    failed: frozenset[int],
    *,
    not_on: str | None = None,
) -> TapeCopy | None:
    """The first good copy of `bitfile` on a readable volume, other than those that
    `failed` for this request (and, with `not_on`, than those on that volume)."""
    vc = VolumeClerk(cat)
    for c in FileClerk(cat, archive_id).copies(bitfile):
        if c.id in failed or c.volume == not_on:
            continue
        v = vc.get(c.volume)
        if v is not None and v.state in READABLE:
            return c
    return None


def failure(cat: Catalog, archive_id: str, bitfile: int, why: str) -> str:
    """What a recall that has no copy left to try fails with."""
    made = FileClerk(cat, archive_id).copies_made(bitfile)
    return f"recall failed: {why}" + (f" (no good copy left of {made})" if made > 1 else "")


def bounce(cat: Catalog, label: str, why: str, *, keep: bool = False) -> list[int]:
    """Recalls for a volume that cannot be mounted go to another readable copy, or fail
    now with a clear error; returns the bitfiles whose recall failed. With `keep` (the
    volume will be back: a stuck cartridge), those without another copy wait for it."""
    failed: list[int] = []
    moved = 0
    queue = RequestQueue(cat)
    files = FileClerk(cat)
    with cat.tx():
        for rid, bitfile in queue.recalls_on(label):
            other = files.readable_copy(bitfile, READABLE, not_on=label)
            if other is not None:
                queue.point_at(rid, *other, why, requeue=False)
                moved += 1
                continue
            if keep:
                continue
            queue.fail(rid, bitfile, f"recall failed: {why}")
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
    return failed


def give_up(cat: Catalog, config: Config, bitfile: int, waited: float) -> Reason | None:
    """An open() waited `waited` seconds for the recall of `bitfile`: the reason it fails
    with (recorded on the file and as an event), or None when the file is there now.
    A recall that something blocks leaves the queue; one that only waits its turn stays."""
    reason = diagnosis.why_recall_waits(cat, config, bitfile)
    if reason is None or reason.code == "no_good_copy":
        return reason
    bf = FileClerk(cat, config.archive_id).get(bitfile)
    why = f"recall timed out after {waited:.0f}s: {reason.message}"
    queue = RequestQueue(cat)
    with cat.tx():
        req = queue.recall_of(bitfile)
        if reason.code in diagnosis.BLOCKING and req is not None:
            queue.fail(req[0], bitfile, why)
        else:
            FileClerk(cat, config.archive_id).set_error(bitfile, why)
        subject = bf.bfid if bf is not None else str(bitfile)
        events.record(cat, "recall_timeout", why, subject=subject, level="error")
    return Reason(reason.code, reason.errno, why)


def expire(cat: Catalog, config: Config, now_ns: int) -> list[tuple[int, Reason]]:
    """The periodic sweep: every recall queued longer than `[cache] recall_timeout` that
    something blocks (diagnosis.BLOCKING) fails with its reason; returns (bitfile,
    reason) to wake waiters. The reasons are found once per sweep and volume, not per
    file, and each gives one event however many recalls it ends: a bulk recall of a
    volume stuck in a drive must not cost a diagnosis or an event per file."""
    timeout = config.cache.recall_timeout
    queue = RequestQueue(cat)
    old = queue.recalls_queued_before(now_ns - int(timeout * 1e9))
    if not old:
        return []
    everywhere = diagnosis.drives_down(cat)
    by_volume: dict[str, Reason | None] = {}
    full: Reason | None = None
    ended: dict[Reason, list[tuple[int, int]]] = {}
    for rid, bitfile, volume, error in old:
        if error == diagnosis.CACHE_WAIT:
            reason = full = full or diagnosis.cache_full(cat, config)
        elif everywhere is not None:
            reason = everywhere
        elif volume is not None:
            if volume not in by_volume:
                by_volume[volume] = diagnosis.volume_reason(cat, volume)
            reason = by_volume[volume]
        else:
            reason = None
        if reason is not None:
            ended.setdefault(reason, []).append((rid, bitfile))
    failed: list[tuple[int, Reason]] = []
    with cat.tx():
        for reason, recalls in ended.items():
            why = f"recall timed out after {timeout:.0f}s: {reason.message}"
            timed_out = Reason(reason.code, reason.errno, why)
            for rid, bitfile in recalls:
                queue.fail(rid, bitfile, why)
                failed.append((bitfile, timed_out))
            events.record(
                cat,
                "recall_timeout",
                f"{len(recalls)} recall(s) timed out after {timeout:.0f}s: {reason.message}",
                level="error",
            )
    return failed
