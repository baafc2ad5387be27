"""Small-file aggregation: which files of a write batch share a tape file.

A filemark is a sync point: the drive empties its buffer and stops streaming, which costs
a real drive a second or more. One tape file per small file makes tape writes as slow as
filemarks; so files below `[aggregation] threshold` go together into one tape file, one pax
archive with many members (drivers.formats.pax), and the catalog records each member's
record and byte offset so a recall locates straight to it.

The policy, split between the library manager and the mover:

* the library manager makes a family's *small* files due once they add up to
  `[aggregation] size` or `files`, or the oldest has waited `[aggregation] age` (default:
  `[mover] flush_delay`), its large files as before (flush_delay, `[mover] batch_files`);
  `reelfs flush`, urgent requests and unmount make everything due at once. A batch is
  either one aggregate (at most `files` files and `size` bytes, small files first) or
  large files only;
* the mover writes the small files of a batch in request order into tape files of at most
  `size` bytes of data, and every large file in a tape file of its own;
* all members of a tape file are committed in one transaction once its closing filemark
  (and, on a labelled volume, its trailer labels) are on tape: a crash before that loses
  nothing but the time spent, the files are still dirty and queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class Sized(Protocol):
    """Anything with a size in bytes: a write request, for `plan`."""

    @property
    def size(self) -> int: ...


R = TypeVar("R", bound=Sized)


def is_small(size: int, threshold: int) -> bool:
    """Whether a file of `size` bytes is aggregated (a threshold of 0 turns it off)."""
    return threshold > 0 and size < threshold


def plan(requests: Sequence[R], *, threshold: int, max_bytes: int) -> list[list[R]]:
    """The tape files to write for `requests`, in order: aggregates of the small files
    (request order, at most `max_bytes` of data each), then one per large file."""
    groups: list[list[R]] = []
    current: list[R] = []
    current_bytes = 0
    large: list[list[R]] = []
    for r in requests:
        if not is_small(r.size, threshold):
            large.append([r])
            continue
        if current and current_bytes + r.size > max_bytes:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(r)
        current_bytes += r.size
    if current:
        groups.append(current)
    return groups + large
