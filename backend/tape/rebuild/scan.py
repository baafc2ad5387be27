"""Reading one reelfs volume for `rebuild-catalog --from-tapes`: what its tapes say.

`scan_volume` walks the volume (backend.tape.walker) and reads the pax headers and
`REELFS.*` records of every member, spacing over the data, into a `VolumeScan`: its
layout, block size, end of data and usage, and one `Occurrence` per member a reelfs mover
wrote. Only what a mover committed counts: a data file cut short by a crash (no filemark,
or on a labelled volume no trailer labels) is left out, and the end of data is put before
it, as the lost catalog had it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.catalog.families import MAX_COPIES
from backend.tape.layout import ANSI, BOT_READ, NONE, read_bot
from backend.tape.walker import Kind, VolumeWalk
from drivers.formats import pax
from drivers.formats.errors import FormatError
from drivers.formats.records import RecordSource
from drivers.formats.tarheaders import HeaderReader
from drivers.tape import TapeDrive, TapeError


@dataclass
class Occurrence:
    """One member written by a reelfs mover, where it is on tape and what it says."""

    volume: str
    fileno: int
    block: int
    record: int
    offset: int
    name: str
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    bfid: str
    version: int
    family: str
    path: str
    archive: str
    adler32: int | None
    crc32c: int | None
    order: int = 0  # position in the scan, volume by volume: later means written later
    copy: int = 1  # REELFS.copy: which of the family's tape copies (its pool)


@dataclass
class VolumeScan:
    """What `scan_volume` found on one volume: its layout, end of data, usage and members."""

    label: str
    blank: bool = False
    layout: str = NONE
    volser: str | None = None
    block_size: int | None = None
    eod_block: int = 0
    data_files: int = 0
    bytes: int = 0
    members: list[Occurrence] = field(default_factory=list)
    foreign_files: int = 0  # data files that are not reelfs pax
    remaining: int | None = None  # what the drive says is left before early warning
    notes: list[str] = field(default_factory=list)


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def scan_volume(drive: TapeDrive, label: str, order_base: int = 0) -> VolumeScan:
    """Read a reelfs volume's labels and pax headers from BOT to end of data."""
    vs = VolumeScan(label)
    bot = read_bot(drive)
    if bot.kind == "blank":
        vs.blank = True
        return vs
    if bot.vol1 is not None:
        vs.layout, vs.volser = ANSI, bot.vol1.volser
    # a data file of a labelled volume awaiting its trailer labels: members, bytes, number
    unconfirmed: tuple[list[Occurrence], int, int] | None = None
    for tf in VolumeWalk(drive, BOT_READ, RecordSource):
        if tf.kind == Kind.LABEL:
            ended_by = tf.finish()
            if tf.label == "EOF1" and unconfirmed is not None and ended_by == "filemark":
                vs.members += unconfirmed[0]
                vs.bytes += unconfirmed[1]
                vs.eod_block, vs.data_files = tf.end, unconfirmed[2] + 1
                unconfirmed = None
            continue
        if tf.kind == Kind.EMPTY:
            continue
        assert tf.data_file is not None
        fileno = tf.data_file
        if unconfirmed is not None:
            vs.notes.append(f"{label} data file {unconfirmed[2]} has no trailer labels: left out")
            unconfirmed = None
        members: list[Occurrence] = []
        record_len = tf.first_record_length or 0
        if tf.kind == Kind.TAR and record_len and record_len % 512 == 0:
            vs.block_size = vs.block_size or record_len
            tf.source.fixed_size = record_len  # reelfs records are all one size: space over data
            try:
                members = _pax_members(tf.source, label, fileno, tf.start, order_base)
            except FormatError as e:
                vs.notes.append(f"{label} data file {fileno}: {e.message}; left out")
                members = []
        else:
            vs.foreign_files += 1
            vs.notes.append(f"{label} data file {fileno} is {tf.format.value}, not reelfs data")
        complete = tf.finish() == "filemark"
        nbytes = max(0, tf.end - tf.start - 1) * record_len
        if not complete:
            vs.notes.append(
                f"{label} data file {fileno} ends without a filemark (a write cut short): left out"
            )
            break
        if vs.layout == NONE:
            vs.members += members
            vs.bytes += nbytes
            vs.eod_block, vs.data_files = tf.end, fileno + 1
        else:
            unconfirmed = (members, nbytes, fileno)
    if unconfirmed is not None:
        vs.notes.append(f"{label} data file {unconfirmed[2]} has no trailer labels: left out")
    try:
        vs.remaining = drive.remaining_capacity()
    except TapeError:
        vs.remaining = None
    return vs


def _pax_members(
    source: RecordSource, label: str, fileno: int, start: int, order_base: int
) -> list[Occurrence]:
    reader = HeaderReader(source)
    out: list[Occurrence] = []
    while True:
        record, offset = source.location()
        ti = reader.next_header()
        if ti is None:
            return out
        if ti.isreg():
            info = pax.member_info(ti)
            r = info.records
            bfid = r.get(pax.REELFS_BFID)
            if bfid:
                out.append(
                    Occurrence(
                        volume=label,
                        fileno=fileno,
                        block=start,
                        record=record,
                        offset=offset,
                        name=info.name,
                        size=info.size,
                        mtime_ns=info.mtime_ns,
                        mode=info.mode,
                        uid=info.uid,
                        gid=info.gid,
                        bfid=bfid,
                        version=int(r.get(pax.REELFS_VERSION, "1") or 1),
                        family=r.get(pax.REELFS_FAMILY, "") or "default",
                        path=r.get(pax.REELFS_PATH) or "/" + info.name,
                        archive=r.get(pax.REELFS_ARCHIVE, ""),
                        adler32=_hex(r.get(pax.REELFS_ADLER32)),
                        crc32c=_hex(r.get(pax.REELFS_CRC32C)),
                        order=order_base + start * 1_000_000 + record,
                        copy=_copy_number(r.get(pax.REELFS_COPY)),
                    )
                )
        reader.skip_to_next(f"data of {ti.name!r}")


def _copy_number(text: str | None) -> int:
    """REELFS.copy, absent from first copies; anything unusable counts as copy 1."""
    if text and text.isdigit() and 1 <= int(text) <= MAX_COPIES:
        return int(text)
    return 1
