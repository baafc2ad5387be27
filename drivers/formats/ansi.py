"""ANSI X3.27-1987 (ISO 1001, ECMA-13) tape labels: VOL1, HDR1/EOF1, HDR2/EOF2.

A labelled reelfs tape has the layout CERN CTA calls AUL (man/reelfs-tape.5)::

    BOT VOL1 | HDR1 HDR2 FM | data records FM | EOF1 EOF2 FM | HDR1 HDR2 FM | ... | EOD

Each label is one 80-byte record of ASCII characters. The helpers below switch a drive in
fixed-block mode to variable-length records while they write or read labels, and back; the
data records of a pax tape file are written at `block_size` each. Data file *k*
(1-based) is tape file 3k-2; its header labels end tape file 3k-3 (which, for the first file,
also holds VOL1), its trailer labels are tape file 3k-1.

A mover labels and appends like this::

    write_vol1(drive, "A00001", owner="REELFS")       # once, at BOT, when labelling
    ...
    drive.space(0, SpaceUnit.END_OF_DATA)             # append after the last trailer
    write_header(drive, volser="A00001", file_id=..., file_sequence=k, block_size=bs)
    writer = TapeFileWriter(drive, bs); writer.add(...); count = writer.finish()
    write_trailer(drive, volser="A00001", file_id=..., file_sequence=k, block_size=bs,
                  block_count=count)

and reads file k back with `read_vol1` (rewinds and checks the volume), `locate` to the
header labels and `read_header`, the data, then `read_trailer`.

Fields follow the standard: a-character fields (A-Z 0-9 space and ``!"%&'()*+,-./:;<=>?_``)
left-justified and space-padded, numeric fields zero-padded, dates as ``cyyddd`` (c is a
space for 19yy, 0 for 20yy, 1 for 21yy...). Where the standard's fields are too small for
modern tapes, reelfs keeps the standard field as CTA does (block length "00000" above 99999,
block count modulo 1,000,000, file sequence modulo 10,000) and records the real value in
HDR2/EOF2's positions 16-50, which the standard reserves for the implementation:
positions 18-27 hold the block length, and in EOF2 positions 28-39 the block count.

Parsers raise `LabelError` naming the label, the field, its character positions (1-based,
as in the standard) and what was wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from drivers.formats.errors import LabelError
from drivers.tape import FilemarkDetected, IncorrectLengthError, TapeDrive

LABEL_SIZE = 80
IMPLEMENTATION_ID = "REELFS"
LABEL_STANDARD_VERSION = "4"  # ANSI X3.27-1987 / ISO 1001:1986; "3" (1978) is read too
_EBCDIC_NAMES = {
    "VOL1".encode("cp500"): "VOL1",
    "HDR1".encode("cp500"): "HDR1",
    "HDR2".encode("cp500"): "HDR2",
}

_A_CHARS = re.compile(r"[A-Z0-9 !\"%&'()*+,\-./:;<=>?_]*")
_DIGITS = re.compile(r"[0-9]+")

NEVER_EXPIRES = None  # expiration date "000000", " 00000", or " 99365"/" 99366"


# -- field encoding ---------------------------------------------------------------------


def _a_field(value: str, width: int, what: str) -> bytes:
    if len(value) > width:
        raise ValueError(f"{what} {value!r} is longer than {width} characters")
    if not _A_CHARS.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} has characters outside the ANSI a-character set"
            " (A-Z, 0-9, space and !\"%&'()*+,-./:;<=>?_)"
        )
    return value.ljust(width).encode("ascii")


def _n_field(value: int, width: int, what: str) -> bytes:
    if not 0 <= value < 10**width:
        raise ValueError(f"{what} {value} does not fit in {width} digits")
    return f"{value:0{width}d}".encode("ascii")


def encode_date(day: dt.date | None) -> bytes:
    """`cyyddd`; None is "000000" (no date)."""
    if day is None:
        return b"000000"
    if not 1900 <= day.year <= 2999:
        raise ValueError(f"date {day} cannot be written as cyyddd (years 1900-2999)")
    century = " " if day.year < 2000 else str(day.year // 100 - 20)
    return f"{century}{day.year % 100:02d}{day.timetuple().tm_yday:03d}".encode("ascii")


def decode_date(
    raw: str, label: str, field: str, pos: str, *, expiry: bool = False
) -> dt.date | None:
    if raw in ("000000", " 00000"):
        return None
    if expiry and raw in (" 99365", " 99366"):
        return NEVER_EXPIRES  # the "never expires" convention of older systems
    c, yy, ddd = raw[0], raw[1:3], raw[3:6]
    if not (c == " " or c.isdigit()) or not yy.isdigit() or not ddd.isdigit():
        raise LabelError(f"{label} {field} (positions {pos}) is {raw!r}: not a cyyddd date")
    year = 1900 + int(yy) if c == " " else 2000 + 100 * int(c) + int(yy)
    days = 366 if dt.date(year, 12, 31).timetuple().tm_yday == 366 else 365
    if not 1 <= int(ddd) <= days:
        raise LabelError(
            f"{label} {field} (positions {pos}) is {raw!r}: day {int(ddd)} of {year}"
            f" is not in 1..{days}"
        )
    return dt.date(year, 1, 1) + dt.timedelta(days=int(ddd) - 1)


class _Fields:
    """Slices an 80-character label and reports errors by field name and positions."""

    def __init__(self, label: str, text: str) -> None:
        self.label = label
        self.text = text

    def raw(self, start: int, end: int) -> str:
        """Positions start..end, 1-based and inclusive, as the standard numbers them."""
        return self.text[start - 1 : end]

    def a(self, start: int, end: int, field: str) -> str:
        raw = self.raw(start, end)
        if not _A_CHARS.fullmatch(raw):
            raise LabelError(
                f"{self.label} {field} (positions {start}-{end}) is {raw!r}: characters outside"
                " the ANSI a-character set"
            )
        return raw.rstrip()

    def text_field(self, start: int, end: int) -> str:
        """A field other implementations fill freely (printable ASCII)."""
        return self.raw(start, end).rstrip()

    def n(self, start: int, end: int, field: str, *, blank: int | None = None) -> int:
        raw = self.raw(start, end)
        if blank is not None and not raw.strip():
            return blank
        if not _DIGITS.fullmatch(raw):
            raise LabelError(
                f"{self.label} {field} (positions {start}-{end}) is {raw!r}:"
                f" not {end - start + 1} digits"
            )
        return int(raw)

    def date(self, start: int, end: int, field: str, *, expiry: bool = False) -> dt.date | None:
        return decode_date(self.raw(start, end), self.label, field, f"{start}-{end}", expiry=expiry)

    def one_of(self, pos: int, allowed: str, field: str) -> str:
        ch = self.raw(pos, pos)
        if ch not in allowed:
            raise LabelError(
                f"{self.label} {field} (position {pos}) is {ch!r}: expected one of {allowed!r}"
            )
        return ch


def _decode(data: bytes | bytearray | memoryview, expected: tuple[str, ...]) -> _Fields:
    data = bytes(data)
    if len(data) != LABEL_SIZE:
        raise LabelError(
            f"a {len(data)}-byte record where an {LABEL_SIZE}-byte {'/'.join(expected)}"
            " label was expected"
        )
    if data[:4] in _EBCDIC_NAMES:
        raise LabelError(
            f"EBCDIC {_EBCDIC_NAMES[data[:4]]} label (IBM standard labels): only ASCII"
            " ANSI labels are supported"
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise LabelError(
            f"{'/'.join(expected)} label has a non-ASCII byte 0x{data[e.start]:02x}"
            f" at position {e.start + 1}"
        ) from None
    bad = next((i for i, ch in enumerate(text) if not " " <= ch <= "~"), None)
    if bad is not None:
        raise LabelError(
            f"{'/'.join(expected)} label has the control character 0x{data[bad]:02x}"
            f" at position {bad + 1}"
        )
    ident = text[:4]
    if ident not in expected:
        raise LabelError(
            f"label identifier (positions 1-4) is {ident!r}, expected {' or '.join(expected)}"
        )
    return _Fields(ident, text)


# -- labels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vol1:
    """The volume label, first record at BOT."""

    volser: str  # volume identifier, 1 to 6 a-characters
    owner: str = ""  # owner identifier, up to 14 a-characters
    accessibility: str = " "
    implementation: str = IMPLEMENTATION_ID
    label_standard: str = LABEL_STANDARD_VERSION

    def to_bytes(self) -> bytes:
        if not self.volser or " " in self.volser:
            raise ValueError(f"volume serial {self.volser!r} must be 1 to 6 characters, no space")
        out = (
            b"VOL1"
            + _a_field(self.volser, 6, "volume serial")  # 5-10
            + _a_field(self.accessibility, 1, "volume accessibility")  # 11
            + b" " * 13  # 12-24 reserved
            + _a_field(self.implementation, 13, "implementation identifier")  # 25-37
            + _a_field(self.owner, 14, "owner identifier")  # 38-51
            + b" " * 28  # 52-79 reserved
            + _a_field(self.label_standard, 1, "label standard version")  # 80
        )
        assert len(out) == LABEL_SIZE
        return out

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Vol1:
        f = _decode(data, ("VOL1",))
        volser = f.a(5, 10, "volume identifier")
        if not volser:
            raise LabelError("VOL1 volume identifier (positions 5-10) is blank")
        if " " in volser:
            raise LabelError(f"VOL1 volume identifier (positions 5-10) {volser!r} has a space")
        return cls(
            volser=volser,
            accessibility=f.a(11, 11, "volume accessibility") or " ",
            implementation=f.text_field(25, 37),
            owner=f.text_field(38, 51),
            label_standard=f.one_of(80, "1234", "label standard version"),
        )


@dataclass(frozen=True)
class FileLabel1:
    """HDR1 (before the data, block count 0) or EOF1 (after it, with the block count)."""

    kind: str  # "HDR" or "EOF"
    file_id: str  # file identifier, up to 17 a-characters
    file_set: str  # file set identifier: the volume serial of the set's first volume
    file_section: int = 1
    file_sequence: int = 1  # written modulo 10,000
    generation: int = 1
    generation_version: int = 0
    created: dt.date | None = None
    expires: dt.date | None = None
    accessibility: str = " "
    block_count: int = 0  # written modulo 1,000,000; EOF2 has the full count
    implementation: str = IMPLEMENTATION_ID

    KINDS: ClassVar[tuple[str, ...]] = ("HDR", "EOF")

    def to_bytes(self) -> bytes:
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be HDR or EOF, not {self.kind!r}")
        if self.kind == "HDR" and self.block_count:
            raise ValueError("HDR1's block count is always 0")
        out = (
            f"{self.kind}1".encode("ascii")
            + _a_field(self.file_id, 17, "file identifier")  # 5-21
            + _a_field(self.file_set, 6, "file set identifier")  # 22-27
            + _n_field(self.file_section, 4, "file section number")  # 28-31
            + _n_field(self.file_sequence % 10_000, 4, "file sequence number")  # 32-35
            + _n_field(self.generation, 4, "generation number")  # 36-39
            + _n_field(self.generation_version, 2, "generation version number")  # 40-41
            + encode_date(self.created)  # 42-47
            + encode_date(self.expires)  # 48-53
            + _a_field(self.accessibility, 1, "file accessibility")  # 54
            + _n_field(self.block_count % 1_000_000, 6, "block count")  # 55-60
            + _a_field(self.implementation, 13, "implementation identifier")  # 61-73
            + b" " * 7  # 74-80 reserved
        )
        assert len(out) == LABEL_SIZE
        return out

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, kind: str | None = None) -> FileLabel1:
        kinds = (kind,) if kind else cls.KINDS
        f = _decode(data, tuple(f"{k}1" for k in kinds))
        k = f.label[:3]
        count = f.n(55, 60, "block count")
        if k == "HDR" and count:
            raise LabelError(f"HDR1 block count (positions 55-60) is {count}, must be 000000")
        return cls(
            kind=k,
            file_id=f.a(5, 21, "file identifier"),
            file_set=f.a(22, 27, "file set identifier"),
            file_section=f.n(28, 31, "file section number"),
            file_sequence=f.n(32, 35, "file sequence number"),
            generation=f.n(36, 39, "generation number", blank=1),
            generation_version=f.n(40, 41, "generation version number", blank=0),
            created=f.date(42, 47, "creation date"),
            expires=f.date(48, 53, "expiration date", expiry=True),
            accessibility=f.a(54, 54, "file accessibility") or " ",
            block_count=count,
            implementation=f.text_field(61, 73),
        )


@dataclass(frozen=True)
class FileLabel2:
    """HDR2 or EOF2: record format and lengths (and, in EOF2, reelfs's full block count)."""

    kind: str  # "HDR" or "EOF"
    block_length: int
    record_length: int | None = None  # None: the same as block_length
    record_format: str = "F"  # F fixed, D variable, S spanned, U undefined
    block_count: int | None = None  # EOF2 only (positions 28-39, reelfs)
    buffer_offset_length: int = 0

    KINDS: ClassVar[tuple[str, ...]] = ("HDR", "EOF")
    FORMATS: ClassVar[str] = "FDSU"

    @property
    def record_len(self) -> int:
        return self.block_length if self.record_length is None else self.record_length

    def to_bytes(self) -> bytes:
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be HDR or EOF, not {self.kind!r}")
        if self.record_format not in self.FORMATS:
            raise ValueError(f"record format {self.record_format!r} is not one of F, D, S, U")
        if self.block_length <= 0:
            raise ValueError(f"block length {self.block_length} must be positive")
        if self.kind == "HDR" and self.block_count is not None:
            raise ValueError("HDR2 has no block count")

        def short(n: int) -> bytes:
            return _n_field(n if n <= 99_999 else 0, 5, "length")

        count = self.block_count if self.kind == "EOF" else None
        out = (
            f"{self.kind}2".encode("ascii")
            + self.record_format.encode("ascii")  # 5
            + short(self.block_length)  # 6-10
            + short(self.record_len)  # 11-15
            + b"  "  # 16-17: density, volume switch (unused)
            + _n_field(self.block_length, 10, "block length")  # 18-27 (reelfs)
            + (_n_field(count, 12, "block count") if count is not None else b" " * 12)  # 28-39
            + b" " * 11  # 40-50
            + _n_field(self.buffer_offset_length, 2, "buffer offset length")  # 51-52
            + b" " * 28  # 53-80 reserved
        )
        assert len(out) == LABEL_SIZE
        return out

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, kind: str | None = None) -> FileLabel2:
        kinds = (kind,) if kind else cls.KINDS
        f = _decode(data, tuple(f"{k}2" for k in kinds))
        label = f.label
        fmt = f.one_of(5, cls.FORMATS, "record format")
        short_block = f.n(6, 10, "block length")
        short_record = f.n(11, 15, "record length")
        # Positions 16-50 belong to the implementation: only trust them when they parse as
        # reelfs's fields, and otherwise fall back on the standard ones.
        long_raw, count_raw = f.raw(18, 27), f.raw(28, 39)
        block = short_block
        if _DIGITS.fullmatch(long_raw):
            block = int(long_raw)
            if short_block and short_block != block:
                raise LabelError(
                    f"{label} block length (positions 6-10) {short_block} disagrees with the"
                    f" reelfs block length (positions 18-27) {block}"
                )
        if block == 0:
            raise LabelError(f"{label} block length (positions 6-10) is 0 and no other is given")
        count = None
        if label == "EOF2" and _DIGITS.fullmatch(count_raw):
            count = int(count_raw)
        record = short_record or block
        return cls(
            kind=label[:3],
            block_length=block,
            record_length=None if record == block else record,
            record_format=fmt,
            block_count=count,
            buffer_offset_length=f.n(51, 52, "buffer offset length", blank=0),
        )


Label = Vol1 | FileLabel1 | FileLabel2


def parse_label(data: bytes | bytearray | memoryview) -> Label:
    """Any of VOL1, HDR1, HDR2, EOF1, EOF2, chosen by the label identifier."""
    ident = bytes(data[:4])
    if ident == b"VOL1":
        return Vol1.parse(data)
    if ident in (b"HDR1", b"EOF1"):
        return FileLabel1.parse(data)
    if ident in (b"HDR2", b"EOF2"):
        return FileLabel2.parse(data)
    _decode(data, ("VOL1", "HDR1", "HDR2", "EOF1", "EOF2"))  # raises with the precise reason
    raise LabelError(f"unsupported label {ident!r}")


# -- tape helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileLabels:
    """The label group before (HDR) or after (EOF) a data tape file.

    `others` holds the raw optional labels (HDR3-9, UHLn/UTLn as CTA writes) that were
    skipped.
    """

    label1: FileLabel1
    label2: FileLabel2
    others: tuple[bytes, ...] = ()


@contextlib.contextmanager
def variable_records(drive: TapeDrive) -> Iterator[None]:
    """Labels are 80-byte records: switch a drive in fixed-block mode to variable-length
    records for the duration, and back."""
    fixed = drive.status().block_size
    if fixed:
        drive.set_block_size(0)
    try:
        yield
    finally:
        if fixed:
            drive.set_block_size(fixed)


def _read_label_record(drive: TapeDrive, what: str) -> bytes | None:
    """The next record if it is 80 bytes; None at a filemark."""
    try:
        data = drive.read_block(LABEL_SIZE)
    except FilemarkDetected:
        return None
    except IncorrectLengthError as e:
        size = f"{e.record_length}-byte" if e.record_length else "longer"
        raise LabelError(f"a {size} record where the {what} label was expected") from None
    return bytes(data)


def write_vol1(drive: TapeDrive, volser: str, owner: str = "") -> None:
    """Rewind and write VOL1 at BOT: the tape becomes an empty labelled volume (everything
    after is erased). Synchronous: the label is on the medium when this returns."""
    label = Vol1(volser=volser, owner=owner).to_bytes()
    with variable_records(drive):
        drive.rewind()
        drive.write_block(label)
        drive.write_filemarks(0)


def read_vol1(drive: TapeDrive) -> Vol1:
    """Rewind and read VOL1. Raises LabelError when the first record is not one (an
    unlabelled tape, a filemark at BOT) and lets BlankCheckError through for a blank tape.
    The drive is left after VOL1."""
    with variable_records(drive):
        drive.rewind()
        data = _read_label_record(drive, "VOL1")
    if data is None:
        raise LabelError("a filemark at BOT where the VOL1 label was expected")
    return Vol1.parse(data)


def _file_label1(
    kind: str,
    volser: str,
    file_id: str,
    file_sequence: int,
    *,
    block_count: int = 0,
    created: dt.date | None,
    expires: dt.date | None,
) -> FileLabel1:
    return FileLabel1(
        kind=kind,
        file_id=file_id,
        file_set=volser,
        file_sequence=file_sequence,
        created=created if created is not None else dt.datetime.now(dt.UTC).date(),
        expires=expires,
        block_count=block_count,
    )


def write_header(
    drive: TapeDrive,
    *,
    volser: str,
    file_id: str,
    file_sequence: int,
    block_size: int,
    created: dt.date | None = None,
    expires: dt.date | None = None,
) -> FileLabels:
    """Write HDR1, HDR2 and a filemark (immediate: the data follows at once) at the current
    position, which must be right after VOL1 or after the previous trailer's filemark."""
    hdr1 = _file_label1("HDR", volser, file_id, file_sequence, created=created, expires=expires)
    hdr2 = FileLabel2(kind="HDR", block_length=block_size)
    with variable_records(drive):
        drive.write_block(hdr1.to_bytes())
        drive.write_block(hdr2.to_bytes())
        drive.write_filemarks(1, immediate=True)
    return FileLabels(hdr1, hdr2)


def write_trailer(
    drive: TapeDrive,
    *,
    volser: str,
    file_id: str,
    file_sequence: int,
    block_size: int,
    block_count: int,
    created: dt.date | None = None,
    expires: dt.date | None = None,
    sync: bool = True,
) -> FileLabels:
    """Write EOF1, EOF2 and a filemark after a data tape file's filemark; `block_count` is
    the number of data records (what `TapeFileWriter.finish` returns). With `sync` the
    filemark is not immediate, so the trailer is on the medium when this returns."""
    eof1 = _file_label1(
        "EOF",
        volser,
        file_id,
        file_sequence,
        block_count=block_count,
        created=created,
        expires=expires,
    )
    eof2 = FileLabel2(kind="EOF", block_length=block_size, block_count=block_count)
    with variable_records(drive):
        drive.write_block(eof1.to_bytes())
        drive.write_block(eof2.to_bytes())
        drive.write_filemarks(1, immediate=not sync)
    return FileLabels(eof1, eof2)


def _read_group(drive: TapeDrive, kind: str) -> FileLabels:
    first = _read_label_record(drive, f"{kind}1")
    if first is None:
        raise LabelError(f"a filemark where the {kind}1 label was expected")
    label1 = FileLabel1.parse(first, kind)
    second = _read_label_record(drive, f"{kind}2")
    if second is None:
        raise LabelError(f"a filemark where the {kind}2 label was expected")
    label2 = FileLabel2.parse(second, kind)
    others: list[bytes] = []
    while (extra := _read_label_record(drive, f"{kind}3-9 or user")) is not None:
        if len(extra) != LABEL_SIZE:
            raise LabelError(f"a {len(extra)}-byte record among the {kind} labels")
        if len(others) >= 16:
            raise LabelError(f"more than 18 {kind} labels before the filemark")
        others.append(extra)
    return FileLabels(label1, label2, tuple(others))


def read_header(drive: TapeDrive) -> FileLabels:
    """Read HDR1, HDR2, any further header labels, and the filemark after them; the drive is
    then at the first data record."""
    with variable_records(drive):
        return _read_group(drive, "HDR")


def read_trailer(drive: TapeDrive) -> FileLabels:
    """Read EOF1, EOF2, any further trailer labels, and the filemark after them."""
    with variable_records(drive):
        return _read_group(drive, "EOF")


def check_trailer(header: FileLabels, trailer: FileLabels, records: int | None = None) -> None:
    """Raise LabelError unless the trailer matches its header (file identifier, sequence,
    block length) and, when given, the number of data records read."""
    h1, t1 = header.label1, trailer.label1
    for field in ("file_id", "file_set", "file_section", "file_sequence"):
        if getattr(h1, field) != getattr(t1, field):
            raise LabelError(
                f"EOF1 {field} {getattr(t1, field)!r} differs from HDR1's {getattr(h1, field)!r}"
            )
    if header.label2.block_length != trailer.label2.block_length:
        raise LabelError(
            f"EOF2 block length {trailer.label2.block_length} differs from HDR2's"
            f" {header.label2.block_length}"
        )
    if records is not None:
        full = trailer.label2.block_count
        if full is not None:
            ok, said = full == records, full
        else:
            ok, said = t1.block_count == records % 1_000_000, t1.block_count
        if not ok:
            raise LabelError(f"trailer block count {said} but {records} data records were read")
