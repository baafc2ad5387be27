"""Creating and opening an emulated library, and the operator's hands: inserting and removing
cartridges through the import/export slots, injecting and clearing faults."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers.emulated.changer import EmulatedChanger
from drivers.emulated.drive import EmulatedDrive
from drivers.emulated.faults import add_fault, read_faults, remove_faults
from drivers.emulated.image import (
    OBJECT_OVERHEAD,
    CartridgeHeader,
    create_image,
    read_header,
)
from drivers.emulated.layout import (
    DIR_MODE,
    DRIVE_BASE,
    IMPORT_EXPORT_BASE,
    MAX_DRIVES,
    MAX_IMPORT_EXPORT,
    SLOT_BASE,
    Description,
    DriveDescription,
    LibraryDir,
    check_barcode,
    fsync_directory,
    is_cleaning,
    write_json_atomically,
)
from drivers.emulated.state import ChangerState, Occupant, read_state, write_state
from drivers.tape import ElementType, Library

#: The default early-warning point, as a fraction of the capacity (5% reserve).
DEFAULT_EARLY_WARNING = 0.95
MIN_CAPACITY = 2 * OBJECT_OVERHEAD + 1


def _check_count(name: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}, not {value}")


def _check_capacity(capacity: int) -> None:
    _check_count("capacity", capacity, MIN_CAPACITY)


def create_library(
    path: Path,
    *,
    drives: int,
    slots: int,
    volumes: Sequence[str],
    capacity: int,
    ie_slots: int = 1,
    early_warning: int | None = None,
    cleaning: Sequence[str] = (),
    cleaning_uses: int = 50,
) -> None:
    """Create an emulated library in `path` (absent or an empty directory).

    `volumes` are blank data cartridges placed in the first slots in order, `cleaning` the
    cleaning cartridges (barcodes starting with CLN) in the slots after them. `capacity` is
    each cartridge's size in bytes (record payloads plus 32 bytes per record or filemark);
    `early_warning` is the number of bytes after which writes report early warning (default
    95% of the capacity).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        if any(path.iterdir()):
            raise ValueError(f"{path} exists and is not empty; refusing to create a library in it")
    _check_count("drives", drives, 1, MAX_DRIVES)
    _check_count("slots", slots, 1)
    _check_count("ie_slots", ie_slots, 0, MAX_IMPORT_EXPORT)
    _check_count("cleaning_uses", cleaning_uses, 1)
    _check_capacity(capacity)
    if early_warning is None:
        early_warning = int(capacity * DEFAULT_EARLY_WARNING)
    elif not isinstance(early_warning, int) or not 0 < early_warning <= capacity:
        raise ValueError(
            f"early_warning must be a byte count in 1..capacity ({capacity}), not {early_warning!r}"
        )
    if isinstance(volumes, str) or isinstance(cleaning, str):
        raise ValueError("volumes and cleaning are sequences of barcodes, not one string")
    seen: set[str] = set()
    for barcode in [*volumes, *cleaning]:
        check_barcode(barcode)
        if barcode in seen:
            raise ValueError(f"duplicate barcode {barcode!r}")
        seen.add(barcode)
    for barcode in volumes:
        if is_cleaning(barcode):
            raise ValueError(
                f"data volume {barcode!r} starts with CLN, the prefix of cleaning cartridges"
            )
    for barcode in cleaning:
        if not is_cleaning(barcode):
            raise ValueError(f"cleaning cartridge {barcode!r} must start with CLN")
    needed = len(volumes) + len(cleaning)
    if needed > slots:
        raise ValueError(
            f"too few slots: {len(volumes)} volume(s) and {len(cleaning)} cleaning cartridge(s)"
            f" need {needed} slots, the library has {slots}"
        )

    library_id = secrets.token_hex(4).upper()
    desc = Description(
        library_id=library_id,
        drives=tuple(
            DriveDescription(f"drive{i}", f"EMU{library_id}{i:03d}", DRIVE_BASE + i)
            for i in range(drives)
        ),
        import_export=tuple(range(IMPORT_EXPORT_BASE, IMPORT_EXPORT_BASE + ie_slots)),
        slots=tuple(range(SLOT_BASE, SLOT_BASE + slots)),
        capacity=capacity,
        early_warning=early_warning,
        cleaning_uses=cleaning_uses,
    )
    lib = LibraryDir(path)
    lib.path.mkdir(parents=True, exist_ok=True)
    lib.tapes.mkdir()
    for d in (lib.path, lib.tapes):
        os.chmod(d, DIR_MODE)  # whatever the umask: its tapes are an archive's data
    state = ChangerState(dict.fromkeys(desc.storage_addresses()))
    for address, barcode in zip(desc.slots, [*volumes, *cleaning], strict=False):
        _new_cartridge(lib, desc, barcode, capacity)
        state.elements[address] = Occupant(barcode)
    fsync_directory(lib.tapes)
    write_state(lib, state)
    # The description goes last: a directory without it is not (yet) a library.
    write_json_atomically(lib.description_file, desc.to_json())


def _new_cartridge(lib: LibraryDir, desc: Description, barcode: str, capacity: int) -> None:
    cleaning = is_cleaning(barcode)
    create_image(
        lib.tape(barcode),
        CartridgeHeader(
            barcode=barcode,
            capacity=capacity,
            early_warning=desc.early_warning_for(capacity),
            cleaning=cleaning,
            cleaning_limit=desc.cleaning_uses if cleaning else 0,
        ),
    )


def open_library(path: Path) -> Library:
    """Open the library in `path`: its changer and its drives keyed by element address."""
    lib = LibraryDir(Path(path))
    desc = lib.read_description()
    read_state(lib)  # fail now, not at the first move, if the state is unreadable
    return Library(
        changer=EmulatedChanger(lib, desc),
        drives={d.address: EmulatedDrive(lib, desc, d) for d in desc.drives},
    )


def _import_export_address(desc: Description, address: int) -> int:
    if desc.element_type(address) != ElementType.IMPORT_EXPORT:
        slots = ", ".join(map(str, desc.import_export)) or "none"
        raise ValueError(
            f"element {address} is not an import/export slot (import/export slots: {slots})"
        )
    return address


def insert_cartridge(
    path: Path, barcode: str, *, capacity: int | None = None, address: int | None = None
) -> int:
    """Put a cartridge into an empty import/export slot, as an operator does by hand.

    A barcode the library has never seen is a new blank cartridge (of `capacity` bytes,
    default the library's); one removed earlier comes back with its data. Returns the
    import/export slot's address.
    """
    check_barcode(barcode)
    lib = LibraryDir(Path(path))
    desc = lib.read_description()
    if capacity is not None:
        _check_capacity(capacity)
    with lib.locked():
        state = read_state(lib)
        already = state.where(barcode)
        if already is not None:
            raise ValueError(f"cartridge {barcode} is already in the library (element {already})")
        if address is None:
            free = [a for a in desc.import_export if state.elements.get(a) is None]
            if not free:
                raise ValueError(
                    "no empty import/export slot"
                    + ("" if desc.import_export else " (this library has none)")
                )
            address = free[0]
        else:
            _import_export_address(desc, address)
            there = state.elements.get(address)
            if there is not None:
                raise ValueError(f"import/export slot {address} is full (holds {there.barcode})")
        image = lib.tape(barcode)
        if image.exists():
            existing = read_header(image).capacity
            if capacity is not None and capacity != existing:
                raise ValueError(
                    f"cartridge {barcode} exists with a capacity of {existing} bytes,"
                    f" not {capacity}"
                )
        else:
            _new_cartridge(lib, desc, barcode, capacity or desc.capacity)
            fsync_directory(lib.tapes)
        state.elements[address] = Occupant(barcode)
        write_state(lib, state)
    return address


def remove_cartridge(path: Path, address: int) -> str:
    """Take the cartridge out of import/export slot `address`; returns its barcode. Its image
    stays in the library directory, so `insert_cartridge` can bring it back."""
    lib = LibraryDir(Path(path))
    desc = lib.read_description()
    _import_export_address(desc, address)
    with lib.locked():
        state = read_state(lib)
        occupant = state.elements.get(address)
        if occupant is None:
            raise ValueError(f"import/export slot {address} is empty")
        state.elements[address] = None
        write_state(lib, state)
    return occupant.barcode


def inject_fault(path: Path, **spec: Any) -> int:
    """Inject a fault (see `drivers.emulated.faults`) into the library, noticed at once by
    every process using it; returns the fault's id."""
    lib = LibraryDir(Path(path))
    desc = lib.read_description()
    return add_fault(lib, {d.name for d in desc.drives}, spec).id


def clear_faults(path: Path, fault_id: int | None = None) -> int:
    """Remove every injected fault, or only `fault_id`; returns how many were removed."""
    lib = LibraryDir(Path(path))
    lib.read_description()
    return remove_faults(lib, lambda f: fault_id is None or f.id == fault_id)


def list_faults(path: Path) -> list[dict[str, Any]]:
    """The faults still pending, as dictionaries (with the count left)."""
    lib = LibraryDir(Path(path))
    lib.read_description()
    return [f.to_json() for f in read_faults(lib)[1]]
