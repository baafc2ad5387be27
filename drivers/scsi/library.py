"""A SCSI library: one changer and its drives, and the operations that need both.

`open_library(changer_url, drive_urls, drive_elements=None)` opens every device, then maps
each drive to its changer element: explicitly (`drive_elements`, in the order of
`drive_urls`), or from the serial numbers the changer reports for its drive elements (DVCID)
matched against each drive's INQUIRY serial (VPD 80h). Where the changer cuts identifiers
short (tgt), a serial matches by unique prefix.

`clean_drive()` runs a cleaning cycle; `return_cartridges()` puts back home the cartridges a
crashed process left in the drives.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.scsi import commands
from drivers.scsi.changer import ScsiMediaChanger
from drivers.scsi.device import ScsiDevice
from drivers.scsi.drive import CleaningResult, ScsiTapeDrive
from drivers.scsi.elements import ElementStatus, SmcElementType
from drivers.scsi.identity import read_identity
from drivers.scsi.quirks import quirks_for
from drivers.scsi.sense import SenseKey
from drivers.scsi.transport import open_device
from drivers.tape import ElementType, IllegalRequestError, Library, NotReadyError

log = logging.getLogger(__name__)


class LibraryMappingError(ValueError):
    """Drives and changer elements cannot be matched; give `drive_elements` explicitly."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """`iscsi://host/iqn/1?quirks=tgt` -> (`iscsi://host/iqn/1`, {'quirks': 'tgt'})."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    return base, dict(urllib.parse.parse_qsl(query, strict_parsing=True))


def _open(url: str) -> tuple[ScsiDevice, str | None]:
    base, opts = split_url(url)
    unknown = set(opts) - {"quirks"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} in {url!r}")
    return open_device(base), opts.get("quirks")


def open_changer(url: str) -> ScsiMediaChanger:
    dev, forced = _open(url)
    try:
        ident = read_identity(dev)
        return ScsiMediaChanger(dev, identity=ident, quirks=quirks_for(ident, forced))
    except BaseException:
        dev.close()
        raise


def open_drive(url: str, name: str | None = None) -> ScsiTapeDrive:
    dev, forced = _open(url)
    try:
        ident = read_identity(dev)
        return ScsiTapeDrive(dev, name=name, identity=ident, quirks=quirks_for(ident, forced))
    except BaseException:
        dev.close()
        raise


def map_drives(
    drives: Sequence[ScsiTapeDrive], drive_elements: Sequence[ElementStatus]
) -> dict[int, ScsiTapeDrive]:
    """Match drives to drive elements by serial: exact first, then unique prefix for
    identifiers the changer truncated."""
    mapping: dict[int, ScsiTapeDrive] = {}
    left = list(drives)
    pending = []
    for el in drive_elements:
        serial = el.serial
        if not serial:
            continue
        exact = [d for d in left if d.serial and d.serial == serial and not el.identifier_truncated]
        if len(exact) == 1:
            mapping[el.address] = exact[0]
            left.remove(exact[0])
        else:
            pending.append(el)
    for el in pending:
        cands = [d for d in left if d.serial and d.serial.startswith(el.serial or "\0")]
        if len(cands) == 1:
            log.info(
                "drive %s matched to element %d by serial prefix %r (identifier truncated)",
                cands[0].name,
                el.address,
                el.serial,
            )
            mapping[el.address] = cands[0]
            left.remove(cands[0])
    if left:
        names = ", ".join(f"{d.name} (serial {d.serial!r})" for d in left)
        seen = ", ".join(f"{e.address}: {e.serial!r}" for e in drive_elements)
        raise LibraryMappingError(
            f"no changer drive element for {names}; the changer reports {seen or 'nothing'}; "
            "set drive_elements in [library]"
        )
    return mapping


def open_library(
    changer_url: str, drive_urls: Sequence[str], drive_elements: Sequence[int] | None = None
) -> Library:
    changer = open_changer(changer_url)
    drives: list[ScsiTapeDrive] = []
    try:
        for i, url in enumerate(drive_urls):
            drives.append(open_drive(url, name=f"drive{i}"))
        status = changer.element_status()
        drive_els = [e for e in status if e.type is SmcElementType.DATA_TRANSFER]
        if drive_elements is not None:
            if len(drive_elements) != len(drives):
                raise LibraryMappingError(
                    f"{len(drive_elements)} drive_elements for {len(drives)} drives"
                )
            known = {e.address for e in drive_els}
            missing = [a for a in drive_elements if a not in known]
            if missing:
                raise LibraryMappingError(
                    f"no drive element at {missing}; changer has {sorted(known)}"
                )
            mapping = dict(zip(drive_elements, drives, strict=True))
        else:
            mapping = map_drives(drives, drive_els)
        for el in drive_els:
            if el.address in mapping and el.full:
                mapping[el.address].volume = el.primary_tag

        def on_drive_change(address: int, barcode: str | None) -> None:
            drive = mapping.get(address)
            if drive is not None:
                drive.medium_moved(barcode)

        changer.on_drive_change = on_drive_change
        changer.known_serials = {a: d.serial for a, d in mapping.items() if d.serial}
        return Library(changer=changer, drives=mapping)
    except BaseException:
        for d in drives:
            d.close()
        changer.close()
        raise


def _drive_of(library: Library, address: int) -> ScsiTapeDrive:
    drive = library.drives.get(address)
    if not isinstance(drive, ScsiTapeDrive):
        raise IllegalRequestError(f"element {address} is not a drive of this library")
    return drive


def clean_drive(
    library: Library, address: int, cleaning_barcode: str | None = None
) -> CleaningResult:
    """One cleaning cycle: a cleaning cartridge from its slot into the drive at `address`,
    the drive's cleaning, and the cartridge back to where it came from."""
    changer = library.changer
    if not isinstance(changer, ScsiMediaChanger):
        raise TypeError("clean_drive needs a ScsiMediaChanger")
    drive = _drive_of(library, address)
    inv = changer.inventory()
    if inv.by_address(address).full:
        raise IllegalRequestError(f"drive element {address} is not empty")
    carts = [
        e
        for e in inv.elements
        if e.full
        and e.type in (ElementType.SLOT, ElementType.IMPORT_EXPORT)
        and changer.is_cleaning(e.barcode)
        and (cleaning_barcode is None or e.barcode == cleaning_barcode)
    ]
    if not carts:
        raise NotReadyError("no cleaning cartridge in the library")
    home = carts[0].address
    changer.move(home, address)
    try:
        result = drive.clean()
    finally:
        changer.move(address, home)
    if result.expired:
        log.warning("cleaning cartridge %s is expired", carts[0].barcode)
    return result


@dataclass(frozen=True)
class Returned:
    """A cartridge `return_cartridges` took from a drive back to a slot."""

    barcode: str | None
    drive_element: int
    slot: int


def return_cartridges(library: Library) -> list[Returned]:
    """Put every cartridge left in a drive back into its home slot (the element's source
    address), or into the first free slot when the home is taken or unknown. For the
    start-up of a library manager after a crash."""
    changer = library.changer
    inv = changer.inventory()
    free = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
    done: list[Returned] = []
    for el in inv.of_type(ElementType.DRIVE):
        if not el.full:
            continue
        drive = library.drives.get(el.address)
        if isinstance(drive, ScsiTapeDrive):
            _unload_if_loaded(drive)
        home = el.source
        slot_ok = False
        if home is not None:
            try:
                target = inv.by_address(home)
                slot_ok = target.type is ElementType.SLOT and not target.full
            except KeyError:
                slot_ok = False
        if not slot_ok:
            if not free:
                raise IllegalRequestError(f"no free slot for the cartridge in drive {el.address}")
            home = free.pop(0)
        elif home in free:
            free.remove(home)
        assert home is not None
        changer.move(el.address, home)
        done.append(Returned(el.barcode, el.address, home))
        log.info("returned %s from drive element %d to slot %d", el.barcode, el.address, home)
    return done


def _unload_if_loaded(drive: ScsiTapeDrive) -> None:
    sense = commands.test_unit_ready(drive.device)
    if sense is not None and sense.key == SenseKey.UNIT_ATTENTION:
        sense = commands.test_unit_ready(drive.device)
    if sense is None:
        drive.unload()
