"""Fault injection: faults are entries in `faults.json` in the library directory, so a test can
inject them into a daemon running in another process.

Drivers notice changes with one `os.stat` per command (the file is only ever replaced by an
atomic rename, so its inode number changes with every version), and re-read it only then.
A fault with a `count` fires that many times; consuming one is a locked read-modify-write,
so two processes never fire the same last count. Kinds:

* ``media``: reading or writing object ``block`` of volume ``volume`` fails (`MediaError`,
  TapeAlert 4 plus 5 for a read or 6 for a write); persistent unless ``count`` is given.
* ``drive``: the next ``count`` (default 1; None: forever) commands of kind ``op`` (write,
  read, load, unload, locate, which covers locate, space and rewind, or any) on drive
  ``drive`` (None: every drive) fail (`DriveError`, TapeAlert 30).
* ``clean``: drive ``drive`` reports TapeAlert 20 (clean now) until a cleaning cartridge
  is loaded in it, which removes the fault.
* ``write_protect``: volume ``volume`` is write-protected (its write-protect tab is set).
* ``changer``: the next ``count`` (default 1) moves fail (`DriveError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drivers.emulated.layout import (
    FAULTS_VERSION,
    LibraryDir,
    check_barcode,
    fsync_directory,
    write_json_atomically,
)

KINDS = ("media", "drive", "clean", "write_protect", "changer")
MEDIA_OPS = ("read", "write", "any")
DRIVE_OPS = ("write", "read", "load", "unload", "locate", "any")

_ALLOWED = {
    "media": {"volume", "block", "op", "count"},
    "drive": {"drive", "op", "count"},
    "clean": {"drive"},
    "write_protect": {"volume"},
    "changer": {"count"},
}


@dataclass(frozen=True)
class Fault:
    """One injected fault: what fails, where (volume, block, drive, operation), how often."""

    id: int
    kind: str
    volume: str | None = None
    block: int | None = None
    drive: str | None = None
    op: str = "any"
    count: int | None = None  # None: fires forever

    def matches_op(self, op: str) -> bool:
        return self.op == "any" or self.op == op

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "count"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(**data)


def _check_count(count: object) -> int | None:
    if count is None:
        return None
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"fault count must be a positive integer or None, not {count!r}")
    return count


def make_fault(fault_id: int, drive_names: set[str], spec: dict[str, Any]) -> Fault:
    """Validate an `inject_fault` spec; every mistake is a ValueError naming it."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
    unknown = set(spec) - _ALLOWED[kind] - {"kind"}
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for a {kind} fault"
            f" (it takes {', '.join(sorted(_ALLOWED[kind]))})"
        )
    drive = spec.get("drive")
    if drive is not None and drive not in drive_names:
        raise ValueError(
            f"no drive named {drive!r} in this library (drives: {', '.join(sorted(drive_names))})"
        )
    if kind in ("media", "write_protect"):
        if "volume" not in spec:
            raise ValueError(f"a {kind} fault needs volume=BARCODE")
        check_barcode(spec["volume"])
    if kind == "media":
        block = spec.get("block")
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise ValueError(f"a media fault needs block=N (an object number >= 0), not {block!r}")
        op = spec.get("op", "any")
        if op not in MEDIA_OPS:
            raise ValueError(f"media fault op must be one of {', '.join(MEDIA_OPS)}, not {op!r}")
        return Fault(
            fault_id,
            kind,
            volume=spec["volume"],
            block=block,
            op=op,
            count=_check_count(spec.get("count")),
        )
    if kind == "drive":
        op = spec.get("op", "any")
        if op not in DRIVE_OPS:
            raise ValueError(f"drive fault op must be one of {', '.join(DRIVE_OPS)}, not {op!r}")
        return Fault(fault_id, kind, drive=drive, op=op, count=_check_count(spec.get("count", 1)))
    if kind == "clean":
        if drive is None:
            raise ValueError("a clean fault needs drive=NAME")
        return Fault(fault_id, kind, drive=drive)
    if kind == "write_protect":
        return Fault(fault_id, kind, volume=spec["volume"], op="write")
    return Fault(fault_id, kind, op="move", count=_check_count(spec.get("count", 1)))


def read_faults(lib: LibraryDir) -> tuple[int, list[Fault]]:
    """(next id, faults) as stored; an absent file means no faults."""
    try:
        data = json.loads(lib.faults_file.read_text())
    except FileNotFoundError:
        return 1, []
    if data.get("version") != FAULTS_VERSION:
        raise ValueError(f"{lib.faults_file}: unsupported version {data.get('version')!r}")
    return int(data["next_id"]), [Fault.from_json(f) for f in data["faults"]]


def _write_faults(lib: LibraryDir, next_id: int, faults: list[Fault]) -> None:
    if not faults:
        try:
            os.unlink(lib.faults_file)
        except FileNotFoundError:
            return
        fsync_directory(lib.path)
        return
    write_json_atomically(
        lib.faults_file,
        {"version": FAULTS_VERSION, "next_id": next_id, "faults": [f.to_json() for f in faults]},
    )


def add_fault(lib: LibraryDir, drive_names: set[str], spec: dict[str, Any]) -> Fault:
    with lib.locked():
        next_id, faults = read_faults(lib)
        fault = make_fault(next_id, drive_names, spec)
        _write_faults(lib, next_id + 1, [*faults, fault])
    return fault


def remove_faults(lib: LibraryDir, which: Callable[[Fault], bool] = lambda f: True) -> int:
    """Remove the faults `which` selects; returns how many."""
    with lib.locked():
        next_id, faults = read_faults(lib)
        kept = [f for f in faults if not which(f)]
        if len(kept) != len(faults):
            _write_faults(lib, next_id, kept)
        return len(faults) - len(kept)


def consume(lib: LibraryDir, fault: Fault) -> bool:
    """Use up one firing of `fault`; False when it is gone already (another process used it
    up or it was cleared), in which case it must not fire."""
    if fault.count is None:
        return True
    with lib.locked():
        next_id, faults = read_faults(lib)
        for i, f in enumerate(faults):
            if f.id == fault.id:
                if f.count is None:
                    return True
                if f.count <= 1:
                    del faults[i]
                else:
                    faults[i] = Fault(**{**asdict(f), "count": f.count - 1})
                _write_faults(lib, next_id, faults)
                return True
    return False


class FaultWatcher:
    """The faults currently injected, re-read only when `faults.json` changed."""

    def __init__(self, lib: LibraryDir) -> None:
        self._path: Path = lib.faults_file
        self._lib = lib
        self._key: tuple[int, int, int] | None = None
        self._faults: tuple[Fault, ...] = ()

    def current(self) -> tuple[Fault, ...]:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._key = None
            self._faults = ()
            return ()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._key:
            self._faults = tuple(read_faults(self._lib)[1])
            self._key = key
        return self._faults
