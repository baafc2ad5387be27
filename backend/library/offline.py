"""The library without the daemon: what `reelfs tape read`, `import-volume` and
`rebuild-catalog` do when the archive is not mounted.

The caller holds the archive lock (backend.admin.lock), so nothing else moves
cartridges meanwhile. `volume_in_drive` puts a cartridge in an empty drive (one the catalog
does not have down), loads it, and whatever happens unloads it and puts it back where it
came from; a cartridge a crash left in a drive is used where it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from backend.catalog.db import Catalog
from backend.catalog.drives import DriveTable
from backend.errors import ArchiveError
from drivers.tape import ElementType, Library, NotReadyError, TapeDrive, TapeError


def _down_drives(cat: Catalog | None) -> set[str]:
    return set() if cat is None else DriveTable(cat).down()


@contextlib.contextmanager
def volume_in_drive(lib: Library, label: str, cat: Catalog | None = None) -> Iterator[TapeDrive]:
    """`label` loaded in a drive for the duration of the block."""
    changer = lib.changer
    inv = changer.inventory()
    el = inv.find(label)
    if el is None:
        raise ArchiveError(f"cartridge {label} is not in the library")
    home: int | None
    if el.type == ElementType.DRIVE:
        address, home = el.address, el.source
    else:
        down = _down_drives(cat)
        free = [
            e.address
            for e in inv.of_type(ElementType.DRIVE)
            if not e.full
            and e.accessible
            and e.address in lib.drives
            and getattr(lib.drives[e.address], "name", None) not in down
        ]
        if not free:
            raise ArchiveError("no empty drive in service to read the cartridge in")
        address, home = free[0], el.address
        changer.move(el.address, address)
    drive = lib.drives.get(address)
    if drive is None:
        raise ArchiveError(f"cartridge {label} is in drive element {address}, which reelfs lacks")
    try:
        drive.load()
        yield drive
    finally:
        try:
            drive.unload()
        except NotReadyError:
            pass
        except TapeError:
            drive.close()
            raise
        inv = changer.inventory()
        empty = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
        if home is None or inv.by_address(home).full:
            if not empty:
                raise ArchiveError(f"no free slot to put {label} back; it stays in the drive")
            home = empty[0]
        changer.move(address, home)
