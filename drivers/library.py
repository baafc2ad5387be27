"""Opening the library an archive is configured with: emulated or SCSI, by `[library] type`.

`open_library(spec, base)` turns the `[library]` table of an archive's `reelfs.toml` into a
`drivers.tape.Library` (a changer and its drives); a table that cannot describe one raises
`drivers.tape.LibraryConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.tape import Library, LibraryConfigError


def open_library(spec: Mapping[str, Any], base: Path) -> Library:
    """Open the library described by `spec` (paths in it are relative to `base`)."""
    # Only the driver asked for is imported: PyScsi alone adds 0.13 s to every `reelfs`
    # command, which an emulated library never needs.
    kind = spec.get("type", "emulated")
    if kind == "emulated":
        from drivers.emulated import open_library as open_emulated

        return open_emulated(base / spec.get("path", "library"))
    if kind == "scsi":
        from drivers.scsi import open_library as open_scsi

        changer = spec.get("changer")
        drives = spec.get("drives")
        if not changer or not drives:
            raise LibraryConfigError("[library] type = \"scsi\" needs 'changer' and 'drives'")
        return open_scsi(changer, list(drives), spec.get("drive_elements"))
    raise LibraryConfigError(f"unknown library type {kind!r} (expected 'emulated' or 'scsi')")
