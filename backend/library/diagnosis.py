"""Why work waits: the reason a recall or a write cannot go on, read from the catalog.

Shared by the daemon (an open() whose recall passed `[cache] recall_timeout` fails with
the reason's errno, and the expiry sweep) and by the CLI (`flush --wait` and
`recall --wait` print the reason while they wait and when they give up). Everything is
read from the catalog, so any process that can open it gets the same answer.

The reasons, the most fundamental first, so that the one a user sees is the one to fix:

* `no_good_copy` (EIO): the file has no copy left that can be read;
* `cache_full` (ENOSPC): the cache is full of data not on tape yet, nothing to evict;
* `no_drive_up` (ETIMEDOUT): every drive is down, each with its reason;
* `volume_unavailable` (ETIMEDOUT): the volume a recall reads cannot be mounted now
  (stuck in a drive that is down, or in a state that cannot be read);
* `no_writable_volume` (ETIMEDOUT): a family has no volume with room and no blank is left;
* `catalog_busy` (ETIMEDOUT): another process held the catalog recently;
* `queued` (ETIMEDOUT): nothing is wrong, the work waits its turn.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

from backend.catalog import reports
from backend.catalog.db import Catalog
from backend.catalog.drives import DOWN, DriveTable
from backend.catalog.families import split_pool
from backend.catalog.files import RELEASED, FileClerk
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import READABLE, VolumeClerk
from backend.config import Config
from backend.config.units import format_size
from backend.library import selection

#: how far back a `catalog_busy` event still explains a wait
CATALOG_BUSY_WINDOW = 120.0
#: what keeps a recall from ever starting until someone acts: the expiry sweep fails
#: these at the deadline (a busy catalog or a long queue pass by themselves)
BLOCKING = frozenset({"no_drive_up", "volume_unavailable", "cache_full"})
#: the error the mover leaves on a recall it put back for want of cache space
#: (backend.mover.recall)
CACHE_WAIT = "waiting for room in the cache"


@dataclass(frozen=True)
class Reason:
    """Why work waits: a stable code, the errno an open() gets for it, and a sentence."""

    code: str
    errno: int
    message: str

    def __str__(self) -> str:
        return self.message


def drives_down(cat: Catalog) -> Reason | None:
    """Every drive is down (a library with no drive at all counts as such)."""
    drives = DriveTable(cat).all()
    if any(d.state != DOWN for d in drives):
        return None
    if not drives:
        return Reason("no_drive_up", errno.ETIMEDOUT, "the library has no drive")
    why = "; ".join(f"{d.name}: {d.reason or 'no reason given'}" for d in drives)
    return Reason("no_drive_up", errno.ETIMEDOUT, f"every drive is down ({why})")


def catalog_busy(cat: Catalog, now_ns: int | None = None) -> Reason | None:
    """Another process held the catalog lately (the movers record `catalog_busy`)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    msg = reports.latest_event(cat, ("catalog_busy",), now_ns - int(CATALOG_BUSY_WINDOW * 1e9))
    if msg is None:
        return None
    return Reason("catalog_busy", errno.ETIMEDOUT, f"the catalog is busy: {msg}")


def cache_full(cat: Catalog, config: Config, size: int | None = None) -> Reason:
    """The cache cannot take `size` more bytes: say how much of it is not on tape yet."""
    dirty = FileClerk(cat).by_state().get("dirty", (0, 0))
    return Reason(
        "cache_full",
        errno.ENOSPC,
        f"the cache is full ({format_size(dirty[1])} of {format_size(config.cache.size)} "
        f"not on tape yet, in {dirty[0]} file(s)) and nothing can be evicted"
        + (f" to recall {format_size(size)}" if size is not None else ""),
    )


def volume_reason(cat: Catalog, volume: str) -> Reason | None:
    """Why nothing can read `volume` now (stuck in a drive that is down, or a state that
    cannot be read); None when it can be mounted."""
    stuck = stuck_in(cat, volume)
    if stuck is not None:
        return stuck
    v = VolumeClerk(cat).get(volume)
    if v is not None and v.state in READABLE:
        return None
    st = v.state if v is not None else "unknown"
    detail = f": {v.error}" if v is not None and v.error else ""
    return Reason(
        "volume_unavailable", errno.ETIMEDOUT, f"volume {volume} is unavailable ({st}{detail})"
    )


def stuck_in(cat: Catalog, volume: str) -> Reason | None:
    """`volume` was left in a drive that went down: nothing reads it until it is out."""
    for d in DriveTable(cat).all():
        if d.state == DOWN and d.volume == volume:
            return Reason(
                "volume_unavailable",
                errno.ETIMEDOUT,
                f"volume {volume} is stuck in drive {d.name}, which is down "
                f"({d.reason or 'no reason given'})",
            )
    return None


def why_recall_waits(cat: Catalog, config: Config, bitfile: int) -> Reason | None:
    """Why the recall of `bitfile` has not brought it into the cache; None when it is there."""
    files = FileClerk(cat, config.archive_id)
    bf = files.get(bitfile)
    if bf is None:
        return Reason("no_good_copy", errno.EIO, "the file was deleted")
    if bf.state != RELEASED:
        return None
    req = RequestQueue(cat).recall_of(bitfile)
    if req is None:
        why = bf.error or "no recall queued"
        return Reason("no_good_copy", errno.EIO, why)
    _rid, state, volume, error, created_ns = req
    if error == CACHE_WAIT:
        return cache_full(cat, config, bf.size)
    down = drives_down(cat)
    if down is not None:
        return down
    if volume is not None:
        unavailable = volume_reason(cat, volume)
        if unavailable is not None:
            return unavailable
    busy = catalog_busy(cat)
    if busy is not None:
        return busy
    if state == "running":
        return Reason("queued", errno.ETIMEDOUT, f"still reading from volume {volume}")
    ahead = RequestQueue(cat).recalls_ahead(created_ns)
    return Reason(
        "queued",
        errno.ETIMEDOUT,
        f"still queued for volume {volume}"
        + (f" behind {ahead} other recall(s)" if ahead else "")
        + (f" (last: {error})" if error else ""),
    )


def why_work_waits(cat: Catalog, config: Config, op: str, bitfiles: list[int]) -> Reason | None:
    """What blocks `bitfiles` from reaching tape (`op` "flush") or the cache ("recall");
    None when nothing does (they wait their turn)."""
    if op == "flush":
        return why_writes_wait(cat, config, bitfiles)
    for b in bitfiles[:50]:  # the first blocked recall says enough
        reason = why_recall_waits(cat, config, b)
        if reason is not None and reason.code != "queued":
            return reason
    return None


def why_writes_wait(
    cat: Catalog, config: Config, bitfiles: list[int] | None = None
) -> Reason | None:
    """Why queued writes (of `bitfiles`, or all) are not going to tape; None when no reason
    is known (they may simply be on their way)."""
    pools = RequestQueue(cat).write_pools_waiting(bitfiles)
    if not pools:
        return None
    down = drives_down(cat)
    if down is not None:
        return down
    vc = VolumeClerk(cat)
    for pool, count, smallest in pools:
        need = selection.need(smallest, config.library.block_size)
        if vc.for_write(split_pool(pool)[0], need) is None and not vc.has_blank(need):
            return Reason(
                "no_writable_volume",
                errno.ETIMEDOUT,
                f"no writable volume for pool {pool}: none of its volumes has "
                f"{format_size(need)} free and no blank volume is left ({count} file(s) wait)",
            )
    return catalog_busy(cat)
