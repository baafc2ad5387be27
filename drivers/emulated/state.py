"""The changer state shared by the changer, the drives and the operator actions.

One JSON file (`state.json`) says which cartridge sits in which element, where a cartridge in
a drive came from, and whether the drive has it threaded (loaded). It plays the part of the
library's own memory: every process reads it fresh, and every change is a read-modify-write
under the library lock followed by an atomic replace, so it survives `kill -9` of whoever was
using the library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from drivers.emulated.layout import STATE_VERSION, LibraryDir, write_json_atomically
from drivers.tape import DriveError


@dataclass
class Occupant:
    """The cartridge in one element."""

    barcode: str
    source: int | None = None  # home slot, for a cartridge in a drive
    loaded: bool = False  # threaded in the drive (only for drive elements)


@dataclass
class ChangerState:
    """Which cartridge is in which element, shared by every process using the library."""

    elements: dict[int, Occupant | None] = field(default_factory=dict)

    def where(self, barcode: str) -> int | None:
        for address, occupant in self.elements.items():
            if occupant is not None and occupant.barcode == barcode:
                return address
        return None

    def to_json(self) -> dict[str, Any]:
        elements: dict[str, Any] = {}
        for address, occupant in sorted(self.elements.items()):
            if occupant is None:
                elements[str(address)] = None
            else:
                entry: dict[str, Any] = {"barcode": occupant.barcode}
                if occupant.source is not None:
                    entry["source"] = occupant.source
                if occupant.loaded:
                    entry["loaded"] = True
                elements[str(address)] = entry
        return {"version": STATE_VERSION, "elements": elements}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangerState:
        if data.get("version") != STATE_VERSION:
            raise DriveError(f"unsupported changer state version {data.get('version')!r}")
        elements: dict[int, Occupant | None] = {}
        for key, entry in data["elements"].items():
            elements[int(key)] = (
                None
                if entry is None
                else Occupant(
                    barcode=entry["barcode"],
                    source=entry.get("source"),
                    loaded=bool(entry.get("loaded", False)),
                )
            )
        return cls(elements)


def read_state(lib: LibraryDir) -> ChangerState:
    """The current state; no lock needed since the file is only ever replaced atomically."""
    try:
        data = json.loads(lib.state_file.read_text())
    except (OSError, ValueError) as e:
        raise DriveError(f"cannot read the changer state {lib.state_file}: {e}") from e
    return ChangerState.from_json(data)


def write_state(lib: LibraryDir, state: ChangerState) -> None:
    """Replace the state file; the caller holds `lib.locked()`."""
    write_json_atomically(lib.state_file, state.to_json())
