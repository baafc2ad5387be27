"""Foreign volumes: tapes written by other programs, adopted read-only (`reelfs import-volume`).

A foreign volume is scanned once, tape file by tape file (`scan`): ANSI label files are
skipped, tar (v7, ustar, GNU, pax) and cpio (odc, newc, crc) tape files are read member by
member (every file's data read and checksummed with adler32 and CRC-32C, the record and
byte offset of its header noted) and anything else (compressed, unknown) is reported and
skipped. The files then appear in the namespace under the chosen directory (`adopt`) as
released files with one tape copy each, whose `format` tells the recall how to read the
member back (`recall.read_member`): tar members through `drivers.formats.pax.read_member`,
cpio members through `drivers.formats.cpio`. Since the checksums were computed at import,
recalls of foreign files are verified like any other.

The volume becomes `readonly` with origin `foreign`. Nothing is ever written to it: the
library manager only writes `writable` volumes, and the mover refuses foreign ones anyway.
While the scan runs the volume is `noaccess`, so no mover takes it for anything else.

The CLI, the tape jobs of the daemon and the mover use the package as one:
`foreign.scan_volume`, `foreign.adopt`, `foreign.read_member`...
"""

from backend.tape.foreign.adopt import (
    ImportReport,
    adopt,
    check_target,
    check_volume,
    import_failed,
    prepare_volume,
)
from backend.tape.foreign.recall import read_member
from backend.tape.foreign.scan import ScannedMember, ScanResult, scan_volume

__all__ = [
    "ImportReport",
    "ScanResult",
    "ScannedMember",
    "adopt",
    "check_target",
    "check_volume",
    "import_failed",
    "prepare_volume",
    "read_member",
    "scan_volume",
]
