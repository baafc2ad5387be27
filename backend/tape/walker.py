"""Walking the tape files of a mounted volume, BOT to end of data: what each one is.

The two readers of whole volumes, `reelfs rebuild-catalog --from-tapes`
(backend.tape.rebuild) and `reelfs import-volume` (backend.tape.foreign.scan), see a volume
as `VolumeWalk` yields it: per tape file, the block it starts at, what its first bytes say
it is (`Kind`: ANSI labels, no records at all, a tar or a cpio archive, anything else),
and a `RecordSource` to read its records from. Once the reader is done with a tape file
(or when it asks, with `TapeFile.finish`), the walker drains what is left of it and notes
how it ended: at its filemark, or at end of data when a tape file was never closed (a
write cut short). The walk stops at end of data.

Data files are numbered from 0 the way the catalog numbers them (`tape_copies.fileno`):
every tape file that is neither labels nor empty, whatever the layout.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from drivers.formats.ansi import LabelError, Vol1
from drivers.formats.foreign import SNIFF_BYTES, Format, sniff
from drivers.formats.records import RecordSource
from drivers.tape import TapeDrive

S = TypeVar("S", bound=RecordSource)


class Kind(enum.StrEnum):
    """What a tape file holds, as far as reading a volume goes."""

    LABEL = "label"  # ANSI label records: VOL1, HDR1-2, EOF1-2...
    EMPTY = "empty"  # no records: a filemark right after the previous one
    TAR = "tar"  # any tar flavour, reelfs pax included
    CPIO = "cpio"  # odc, newc, crc
    OTHER = "other"  # compressed, binary cpio, unknown

    @classmethod
    def of(cls, fmt: Format) -> Kind:
        if fmt == Format.ANSI_LABEL:
            return cls.LABEL
        if fmt == Format.EMPTY:
            return cls.EMPTY
        if fmt.is_tar:
            return cls.TAR
        if fmt.is_cpio:
            return cls.CPIO
        return cls.OTHER


@dataclass
class TapeFile(Generic[S]):
    """One tape file of the volume being walked; `source` reads its records."""

    number: int  # tape file number: filemarks from BOT before it
    start: int  # block (logical object from BOT) of its first record
    format: Format
    kind: Kind
    head: bytes  # its first SNIFF_BYTES bytes, or all of it when shorter
    source: S
    data_file: int | None  # data file number, None for labels and empty tape files
    _end: int | None = None

    @property
    def first_record_length(self) -> int | None:
        return self.source.first_record_length

    @property
    def label(self) -> str | None:
        """The identifier of a label tape file's first label (VOL1, HDR1, EOF1...)."""
        return self.head[:4].decode("ascii") if self.kind == Kind.LABEL else None

    def vol1(self) -> Vol1 | None:
        """The VOL1 label this tape file starts with, if it does and it parses."""
        if self.label != "VOL1":
            return None
        try:
            return Vol1.parse(self.head[:80])
        except LabelError:
            return None

    @property
    def ended_by(self) -> str | None:
        """How it ended once read or drained to its end: "filemark" or "eod"."""
        return self.source.ended_by

    def finish(self) -> str | None:
        """Drain what the reader left of the tape file; returns how it ended."""
        if self._end is None:
            self.source.drain()
            self._end = self.source.drive.read_position().block
        return self.source.ended_by

    @property
    def end(self) -> int:
        """The block after the tape file (after its filemark, or end of data)."""
        if self._end is None:
            raise RuntimeError(f"tape file {self.number} is not finished yet")
        return self._end


class VolumeWalk(Generic[S]):
    """The tape files of the volume in `drive`, from BOT, read in variable-length mode.

    `source_type` makes each tape file's source (a RecordSource, or a subclass that keeps
    more of what it reads). After a walk that reached end of data, `eod_block` is there.
    """

    def __init__(
        self, drive: TapeDrive, max_record: int, source_type: Callable[[TapeDrive, int], S]
    ) -> None:
        self.drive = drive
        self.max_record = max_record
        self.source_type = source_type
        self.eod_block: int | None = None

    def __iter__(self) -> Iterator[TapeFile[S]]:
        drive = self.drive
        drive.set_block_size(0)
        drive.rewind()
        number = data_files = 0
        start = drive.read_position().block
        while True:
            source = self.source_type(drive, self.max_record)
            head = source.peek(SNIFF_BYTES)
            if not head and source.ended_by == "eod":
                self.eod_block = drive.read_position().block
                return
            fmt = sniff(head, source.first_record_length)
            kind = Kind.of(fmt)
            data = kind not in (Kind.LABEL, Kind.EMPTY)
            tf = TapeFile(number, start, fmt, kind, head, source, data_files if data else None)
            yield tf
            if tf.finish() == "eod":
                self.eod_block = tf.end
                return
            number += 1
            if data:
                data_files += 1
            start = tf.end
