"""Volume selection: which volume a pool's next write batch goes to, and how much of the
batch it can take.

The mounted volume is preferred (no tape motion), then the pool's fullest writable
volume with room (partly written volumes are filled before new ones are started), then
the oldest blank volume of the common pool, which then belongs to the pool (the Enstore
seed's question, answered: volumes are drawn from the unallocated pool in the order they
were put into the library). A file goes only to a volume with room for it: its size
plus two records for headers, padding and labels (`need`).
"""

from __future__ import annotations

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.queue import Request
from backend.catalog.volumes import WRITABLE, Volume, VolumeClerk
from backend.library.aggregation import is_small

#: an aggregated member's pax and ustar headers (with a long path) and padding, at most
MEMBER_OVERHEAD = 8192


def need(size: int, block_size: int) -> int:
    """Bytes of volume a file of `size` takes: its headers, the padding of its last
    record and, on a labelled volume, the labels around its tape file fit in two more
    records."""
    return size + 2 * block_size


def share(size: int, *, threshold: int, block_size: int) -> int:
    """What a file adds to a batch's tape use: an aggregated member costs its headers
    (the path included, 8 KiB is plenty), any other file a tape file of its own."""
    if is_small(size, threshold):
        return size + MEMBER_OVERHEAD
    return need(size, block_size)


def choose(
    cat: Catalog,
    pool: str,
    first: Request,
    *,
    block_size: int,
    mounted: Volume | None,
    in_use: set[str],
) -> Volume | None:
    """The volume for a batch of `pool` starting with request `first`, or None."""
    room = need(first.size, block_size)
    if (
        mounted is not None
        and mounted.state == WRITABLE
        and mounted.family == pool
        and mounted.free >= room
    ):
        return mounted
    vc = VolumeClerk(cat)
    vol = vc.for_write(pool, room, in_use)
    if vol is not None:
        return vol
    group = FileClerk(cat).storage_group(first.bitfile)
    vol = vc.draw_blank(pool, group, room, in_use)
    if vol is not None:
        events.record(
            cat,
            "volume_assigned",
            f"blank volume given to family {pool}",
            subject=vol.label,
            family=pool,
        )
    return vol


def fit(
    requests: list[Request], volume: Volume, *, threshold: int, block_size: int
) -> list[Request]:
    """The head of a batch that the volume can take (at least its first request)."""
    room = volume.free
    batch: list[Request] = []
    for r in requests:
        cost = share(r.size, threshold=threshold, block_size=block_size)
        if cost > room and batch:
            break
        batch.append(r)
        room -= cost
    return batch
