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
"""

from __future__ import annotations

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import RELEASED, FileClerk, TapeCopy
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import READABLE, STUCK, SUSPECT, VolumeClerk
from backend.errors import ArchiveError


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
