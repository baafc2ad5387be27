"""Where things are on a reelfs volume: the two layouts of man/reelfs-tape.5 in numbers.

Unlabelled (`none`)::

    pax FM pax FM ... EOD

Labelled (`ansi`, the layout CERN CTA calls AUL)::

    VOL1 HDR1 HDR2 FM pax FM EOF1 EOF2 FM HDR1 HDR2 FM pax FM EOF1 EOF2 FM ... EOD

The catalog numbers *data files* from 0 on every volume (`tape_copies.fileno`,
`volumes.next_fileno`, `reelfs tape read VOLUME FILENO`), whatever the layout: data file k
is tape file k unlabelled, tape file 3k+1 labelled (its header labels end tape file 3k, which
for k = 0 also holds VOL1). Block numbers are SSC logical objects (records and filemarks)
from BOT; a tape copy's `block` is the first *data* record of its tape file, so that
`user.reelfs.location` points at the data whatever the labels around it.

The volume serial in VOL1 has six characters; barcodes may be longer (LTO barcodes carry a
two-character media suffix, "RF0001L8"), so the volser is the barcode's first six
characters, the LTO convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.catalog.db import Catalog
from backend.catalog.foreign import FOREIGN
from backend.catalog.tapefiles import TapeFiles
from drivers.formats.ansi import LabelError, Vol1, variable_records
from drivers.tape import (
    BlankCheckError,
    FilemarkDetected,
    IncorrectLengthError,
    TapeDrive,
)

NONE, ANSI = "none", "ansi"
LAYOUTS = (NONE, ANSI)

#: objects (two labels and a filemark) of a header group, and of a trailer group
LABEL_GROUP = 3
#: the first record read at BOT to tell blank, labelled and data tapes apart
BOT_READ = 1 << 20

_ARCHIVE_RECORD = re.compile(rb"\d+ REELFS\.archive=([0-9A-F]{8})\n")


def volser_for(barcode: str) -> str:
    """The six-character VOL1 volume serial of a cartridge (the LTO convention)."""
    return barcode[:6]


def file_identifier(archive_id: str, fileno: int) -> str:
    """HDR1's 17-character file identifier: the archive id and the data file number."""
    return f"{archive_id}{fileno % 10**9:09d}"


def data_tape_file(layout: str, fileno: int) -> int:
    """The tape file number (filemarks from BOT) of data file `fileno`."""
    return 3 * fileno + 1 if layout == ANSI else fileno


def objects_of(layout: str, records: int) -> int:
    """Logical objects one data file of `records` records takes on tape."""
    return records + 1 + (2 * LABEL_GROUP if layout == ANSI else 0)


def data_start(layout: str, start: int) -> int:
    """The block of the first data record of a tape file whose labels begin at `start`."""
    return start + LABEL_GROUP if layout == ANSI else start


def volume_layout(label_format: str | None, eod_block: int, default: str) -> str:
    """The layout of a volume: what it was started with, or for a blank one the library's.

    Volumes written before labels existed have no recorded format and data: unlabelled.
    """
    if label_format in LAYOUTS:
        return label_format
    return NONE if eod_block > 0 else default


@dataclass(frozen=True)
class Bot:
    """What the first record of a tape says."""

    kind: str  # blank | vol1 | filemark | data
    vol1: Vol1 | None = None
    head: bytes = b""  # the first record (data), as far as it was read
    detail: str = ""

    @property
    def archive_id(self) -> str | None:
        """The REELFS.archive of a reelfs pax tape file starting at BOT, if it is one."""
        m = _ARCHIVE_RECORD.search(self.head[:8192])
        return m.group(1).decode() if m else None


def read_bot(drive: TapeDrive, max_record: int = BOT_READ) -> Bot:
    """Rewind and read the first record, in variable-length mode. The drive is left after
    it (or at BOT for a blank tape)."""
    with variable_records(drive):
        drive.rewind()
        try:
            data = drive.read_block(max_record)
        except BlankCheckError:
            return Bot("blank")
        except FilemarkDetected:
            return Bot("filemark")
        except IncorrectLengthError as e:
            return Bot("data", detail=f"a first record of {e.record_length or 'over'} bytes")
    data = bytes(data)
    if len(data) == 80 and data[:4] == b"VOL1":
        try:
            return Bot("vol1", vol1=Vol1.parse(data))
        except LabelError as e:
            return Bot("data", head=data, detail=f"a malformed VOL1 label: {e.message}")
    return Bot("data", head=data)


def describe(bot: Bot) -> str:
    """The tape's first record, in words, for events and errors."""
    if bot.kind == "blank":
        return "the tape is blank"
    if bot.kind == "filemark":
        return "the tape starts with a filemark (no VOL1 label)"
    if bot.kind == "vol1" and bot.vol1 is not None:
        owner = f", owner {bot.vol1.owner}" if bot.vol1.owner else ""
        return f"VOL1 label {bot.vol1.volser}{owner}"
    if bot.detail:
        return bot.detail
    aid = bot.archive_id
    if aid:
        return f"unlabelled reelfs data of archive {aid}"
    return f"unlabelled data ({len(bot.head)}-byte first record, no VOL1 label)"


@dataclass(frozen=True)
class VolumeFormat:
    """The on-tape facts of a volume the catalog keeps beside `Volume` (schema v3, v4)."""

    label: str
    label_format: str | None
    volser: str | None
    origin: str | None
    block_size: int | None
    eod_block: int
    next_fileno: int

    @property
    def foreign(self) -> bool:
        return self.origin == FOREIGN

    def layout(self, default: str) -> str:
        return volume_layout(self.label_format, self.eod_block, default)


def volume_format(cat: Catalog, label: str) -> VolumeFormat | None:
    columns = TapeFiles(cat).format_columns(label)
    return None if columns is None else VolumeFormat(*columns)
