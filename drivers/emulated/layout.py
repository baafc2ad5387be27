"""The emulated library's directory: file names, the static description, element addressing,
barcode rules, and the two primitives every state file relies on (an exclusive `flock` and
an atomic JSON write).

A library directory holds:

    library.json     static description (drives and serials, element addresses, defaults)
    state.json       changer state: which cartridge is in which element, which drive is loaded
    faults.json      injected faults (absent when there are none)
    lock             the lock file serialising every read-modify-write of the two above
    tapes/BARCODE.tape     a cartridge's record payloads (see image.py)
    tapes/BARCODE.index    its cartridge header and record index

See man/reelfs-emulated.5 for the byte-level description.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.tape import ElementType, LibraryConfigError

LIBRARY_FORMAT = "reelfs-emulated-library"
LIBRARY_VERSION = 1
STATE_VERSION = 1
FAULTS_VERSION = 1

DESCRIPTION_FILE = "library.json"
STATE_FILE = "state.json"
FAULTS_FILE = "faults.json"
LOCK_FILE = "lock"
TAPES_DIR = "tapes"
TAPE_SUFFIX = ".tape"
#: a library's files hold an archive's data: its owner's alone, whatever the umask
FILE_MODE = 0o600
DIR_MODE = 0o700

# Element addresses as a typical SMC library numbers them.
TRANSPORT_ADDRESS = 1
IMPORT_EXPORT_BASE = 16
DRIVE_BASE = 256
SLOT_BASE = 1024
MAX_IMPORT_EXPORT = DRIVE_BASE - IMPORT_EXPORT_BASE
MAX_DRIVES = SLOT_BASE - DRIVE_BASE

CLEANING_PREFIX = "CLN"
_BARCODE = re.compile(r"[A-Z0-9]{1,10}")


def check_barcode(barcode: object) -> str:
    """Return `barcode` if it is a valid volume tag (1..10 of A-Z 0-9), else ValueError."""
    if not isinstance(barcode, str) or not _BARCODE.fullmatch(barcode):
        raise ValueError(
            f"invalid barcode {barcode!r}: expected 1 to 10 characters from A-Z and 0-9"
        )
    return barcode


def is_cleaning(barcode: str) -> bool:
    return barcode.startswith(CLEANING_PREFIX)


@dataclass(frozen=True)
class DriveDescription:
    """One drive of the library as created: its name, serial and element address."""

    name: str
    serial: str
    address: int


@dataclass(frozen=True)
class Description:
    """The static part of a library: what `create_library` decided, never rewritten."""

    library_id: str
    drives: tuple[DriveDescription, ...]
    import_export: tuple[int, ...]
    slots: tuple[int, ...]
    capacity: int
    early_warning: int
    cleaning_uses: int

    def element_type(self, address: int) -> ElementType | None:
        if address == TRANSPORT_ADDRESS:
            return ElementType.TRANSPORT
        if address in self.import_export:
            return ElementType.IMPORT_EXPORT
        if any(d.address == address for d in self.drives):
            return ElementType.DRIVE
        if address in self.slots:
            return ElementType.SLOT
        return None

    def storage_addresses(self) -> list[int]:
        """Every element that can hold a cartridge, in address order."""
        return [
            *self.import_export,
            *(d.address for d in self.drives),
            *self.slots,
        ]

    def drive(self, address: int) -> DriveDescription:
        for d in self.drives:
            if d.address == address:
                return d
        raise KeyError(address)

    def early_warning_for(self, capacity: int) -> int:
        """The early-warning point for a cartridge of `capacity` bytes, at the same fraction
        as the library's default cartridge."""
        if capacity == self.capacity:
            return self.early_warning
        return max(1, capacity * self.early_warning // self.capacity)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LIBRARY_FORMAT,
            "version": LIBRARY_VERSION,
            "library_id": self.library_id,
            "transport": TRANSPORT_ADDRESS,
            "drives": [
                {"name": d.name, "serial": d.serial, "address": d.address} for d in self.drives
            ],
            "import_export": list(self.import_export),
            "slots": list(self.slots),
            "capacity": self.capacity,
            "early_warning": self.early_warning,
            "cleaning_uses": self.cleaning_uses,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Description:
        if data.get("format") != LIBRARY_FORMAT:
            raise LibraryConfigError(f"{where} is not an emulated library description")
        if data.get("version") != LIBRARY_VERSION:
            raise LibraryConfigError(
                f"{where}: unsupported library version {data.get('version')!r}"
                f" (this reelfs reads version {LIBRARY_VERSION})"
            )
        return cls(
            library_id=data["library_id"],
            drives=tuple(
                DriveDescription(d["name"], d["serial"], int(d["address"])) for d in data["drives"]
            ),
            import_export=tuple(int(a) for a in data["import_export"]),
            slots=tuple(int(a) for a in data["slots"]),
            capacity=int(data["capacity"]),
            early_warning=int(data["early_warning"]),
            cleaning_uses=int(data["cleaning_uses"]),
        )


class LibraryDir:
    """Paths inside one library directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def description_file(self) -> Path:
        return self.path / DESCRIPTION_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def faults_file(self) -> Path:
        return self.path / FAULTS_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def tapes(self) -> Path:
        return self.path / TAPES_DIR

    def tape(self, barcode: str) -> Path:
        return self.tapes / f"{check_barcode(barcode)}{TAPE_SUFFIX}"

    def read_description(self) -> Description:
        try:
            data = json.loads(self.description_file.read_text())
        except FileNotFoundError:
            raise LibraryConfigError(
                f"{self.path} is not an emulated library (no {DESCRIPTION_FILE});"
                " create one with drivers.emulated.create_library"
            ) from None
        except (OSError, ValueError) as e:
            raise LibraryConfigError(f"cannot read {self.description_file}: {e}") from e
        return Description.from_json(data, self.description_file)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the library's exclusive lock (across processes) for a read-modify-write."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never a mix,
    even if this process is killed half-way (tmp + fsync + rename + directory fsync)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
