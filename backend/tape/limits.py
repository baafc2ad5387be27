"""Size limits: the largest file that can ever reach tape, and why pending writes cannot.

A file goes to tape as one tape file of its own: pax headers, its data padded to whole
records, a filemark and, on a labelled (ANSI) volume, the header and trailer label groups
around it (and VOL1 once). Each record and filemark also costs the medium a little of its
capacity: inter-record gaps on a real drive, a per-object header in the emulated image
(`drivers.emulated.image.OBJECT_OVERHEAD`) or in tgt's backing file. The largest file is
what a blank volume of the largest capacity holds once all of that is counted, and never
more than `backend.library.selection.need` lets a volume be chosen for.

`stuck_writes` tells what keeps files that are not on tape from going there (no drive up,
files larger than any volume can hold, no volume with room), so that `umount` and
`flush --wait` say so instead of waiting on work that cannot happen.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.catalog.db import Catalog
from backend.catalog.drives import DriveTable
from backend.catalog.files import FileClerk
from backend.catalog.volumes import VolumeClerk
from backend.config import Config
from backend.config.errors import ConfigError
from backend.config.units import format_size
from backend.library.selection import MEMBER_OVERHEAD, need
from backend.tape.layout import ANSI

#: an ANSI label record (VOL1, HDR1, HDR2, EOF1, EOF2)
LABEL_BYTES = 80
#: the end-of-archive blocks after a pax archive's last member
TAR_END = 1024
#: the capacity a record or filemark costs beyond its payload, by library kind: the
#: emulated image's per-object header; tgt keeps a 512-byte header per block on its
#: backing file, and a real drive's gaps are counted in its native capacity already
_OBJECT_COST = {"emulated": 32, "scsi": 512}


def object_cost(library_type: str) -> int:
    """Capacity each record or filemark costs on top of its payload in this library."""
    return _OBJECT_COST.get(library_type, max(_OBJECT_COST.values()))


def largest_file(capacity: int, block_size: int, *, layout: str, object_cost: int) -> int:
    """The largest file a blank volume of `capacity` bytes takes as one tape file."""
    if capacity <= 0:
        return 0
    usable = capacity - object_cost  # the filemark that closes the data file
    if layout == ANSI:
        # VOL1, HDR1 HDR2 FM before the data, EOF1 EOF2 FM after it
        usable -= 5 * (LABEL_BYTES + object_cost) + 2 * object_cost
    records = max(0, usable) // (block_size + object_cost)
    exact = records * block_size - MEMBER_OVERHEAD - TAR_END
    # and selection.need(size) must fit the volume, or no volume is ever chosen for it
    return max(0, min(exact, capacity - (need(0, block_size))))


def archive_limit(cat: Catalog, *, block_size: int, layout: str, library_type: str) -> int:
    """The largest file any volume of the library can hold (0: no volume known)."""
    return largest_file(
        VolumeClerk(cat).largest_capacity(),
        block_size,
        layout=layout,
        object_cost=object_cost(library_type),
    )


def limit_of(cat: Catalog, config: Config) -> int:
    """`archive_limit` for an archive's configuration."""
    lib = config.library
    return archive_limit(
        cat, block_size=lib.block_size, layout=lib.label_format, library_type=lib.type
    )


def check_max_file_size(configured: int | None, limit: int) -> None:
    """`[mount] max_file_size` above what a volume holds is a configuration error."""
    if configured is not None and limit and configured > limit:
        raise ConfigError(
            f"reelfs.toml: [mount] max_file_size ({format_size(configured)}, {configured} "
            f"bytes) is larger than the largest file a volume can hold ({limit} bytes, "
            f"{format_size(limit)}: the largest volume's capacity less tape headers and labels)"
        )


@dataclass(frozen=True)
class Stuck:
    """Files not on tape that cannot get there now, and why."""

    files: int
    nbytes: int
    reason: str


def stuck_writes(cat: Catalog, limit: int, block_size: int) -> Stuck | None:
    """What keeps the files not yet on tape from being written, or None if nothing does.

    Only conditions that no waiting will change are reported; a drive that is busy or a
    volume being mounted is progress, not a reason."""
    files = FileClerk(cat)
    pending, nbytes = files.pending_writes()
    if not pending:
        return None
    if not DriveTable(cat).count_up():
        return Stuck(
            pending, nbytes, "no drive is up (reelfs drives); put one back with reelfs drive up"
        )
    if limit:
        big, big_bytes = files.pending_larger_than(limit)
        if big:
            return Stuck(
                big,
                big_bytes,
                f"larger than the largest file a volume can hold ({limit} bytes, "
                f"{format_size(limit)}); they can never reach tape: remove or truncate them",
            )
    smallest, _ = files.pending_sizes()
    room = VolumeClerk(cat).largest_room()
    if room < need(smallest, block_size):
        return Stuck(
            pending,
            nbytes,
            f"no blank or writable volume has room (the most any can take is "
            f"{format_size(room)}); add volumes to the library",
        )
    return None
