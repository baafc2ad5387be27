"""Walking a volume's tape files (backend/tape/walker.py), on the in-memory drive and on
the emulated one, over tapes written with the project's own writers, tarfile and cpio."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.tape.walker import Kind, TapeFile, VolumeWalk
from drivers.emulated import create_library, open_library
from drivers.formats.ansi import write_header, write_trailer, write_vol1
from drivers.formats.foreign import DEFAULT_MAX_RECORD, Format
from drivers.formats.pax import MemberInfo, TapeFileWriter, reelfs_records
from drivers.formats.records import RecordSource
from drivers.tape import ElementType, TapeDrive
from tests.formats.memdrive import MemDrive
from tests.formats.util import chop

BS = 4096
MTIME_NS = 1_700_000_000_000_000_000


def pax_file(drive: TapeDrive, names: list[str], *, filemark: bool = True) -> int:
    """A reelfs data file of one member per name; returns its records."""
    writer = TapeFileWriter(drive, BS)
    for i, name in enumerate(names):
        data = bytes([i]) * (1000 * (i + 1))
        info = MemberInfo(name, len(data), MTIME_NS, 0o644, records=reelfs_records(bfid=name))
        writer.add(info, io.BytesIO(data))
    return writer.finish(filemark=filemark)


def records(drive: TapeDrive, data: bytes, size: int, *, filemark: bool = True) -> None:
    """A foreign tape file: `data` in records of `size` bytes (the last one shorter)."""
    drive.set_block_size(0)
    for record in chop(data, size):
        drive.write_block(record)
    if filemark:
        drive.write_filemarks(1)


def labelled_file(drive: TapeDrive, seq: int, names: list[str], *, trailer: bool = True) -> None:
    labels = {"volser": "WLK001", "file_id": f"F{seq}", "file_sequence": seq, "block_size": BS}
    write_header(drive, **labels)
    count = pax_file(drive, names)
    if trailer:
        write_trailer(drive, **labels, block_count=count)


def tar_archive(fmt: int, names: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name in names:
            data = name.encode() * 100
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), MTIME_NS // 10**9
            tar.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def walk(drive: TapeDrive, read_all: bool = False) -> tuple[list[TapeFile], VolumeWalk]:
    """Every tape file of the walk, finished; with `read_all` the test reads each one's
    bytes through its source first, as the scans do."""
    w = VolumeWalk(drive, DEFAULT_MAX_RECORD, RecordSource)
    seen = []
    for tf in w:
        if read_all:
            while tf.source.read(1 << 16):
                pass
        seen.append(tf)
    for tf in seen:
        tf.finish()  # already done by the walker: must not move the drive
    return seen, w


def summary(files: list[TapeFile]) -> list[tuple]:
    return [(tf.number, tf.start, tf.kind, tf.data_file, tf.end, tf.ended_by) for tf in files]


@pytest.mark.parametrize("read_all", [False, True], ids=["drained", "read"])
def test_an_unlabelled_volume_is_data_files_between_filemarks(read_all):
    drive = MemDrive()
    first = pax_file(drive, ["a", "b"])
    second = pax_file(drive, ["c"])
    files, w = walk(drive, read_all)
    assert [tf.format for tf in files] == [Format.REELFS_PAX, Format.REELFS_PAX]
    assert summary(files) == [
        (0, 0, Kind.TAR, 0, first + 1, "filemark"),
        (1, first + 1, Kind.TAR, 1, first + second + 2, "filemark"),
    ]
    assert all(tf.first_record_length == BS for tf in files)
    assert files[0].head[:512] == drive.objects[0][:512]
    assert w.eod_block == len(drive.objects) == drive.read_position().block


def test_a_labelled_volume_numbers_data_files_as_the_catalog_does():
    drive = MemDrive()
    write_vol1(drive, "WLK001", owner="REELFS")
    labelled_file(drive, 1, ["a"])
    labelled_file(drive, 2, ["b", "c"])
    files, w = walk(drive)
    assert [tf.kind for tf in files] == [Kind.LABEL, Kind.TAR, Kind.LABEL] * 2
    assert [tf.label for tf in files] == ["VOL1", None, "EOF1", "HDR1", None, "EOF1"]
    assert [tf.data_file for tf in files] == [None, 0, None, None, 1, None]
    assert [tf.number for tf in files] == list(range(6))
    # each tape file starts where the one before ended, after its filemark
    assert [tf.start for tf in files[1:]] == [tf.end for tf in files[:-1]]
    assert files[1].start == drive.file_start(1) == 4  # VOL1 HDR1 HDR2 FM
    vol1 = files[0].vol1()
    assert vol1 is not None and (vol1.volser, vol1.owner) == ("WLK001", "REELFS")
    assert files[3].vol1() is None and files[1].vol1() is None  # HDR1, data
    assert w.eod_block == len(drive.objects)


def test_empty_tape_files_are_no_data_files():
    drive = MemDrive()
    pax_file(drive, ["a"])
    drive.write_filemarks(2)  # two tape files without records
    pax_file(drive, ["b"])
    files, w = walk(drive)
    assert [(tf.kind, tf.format, tf.data_file) for tf in files] == [
        (Kind.TAR, Format.REELFS_PAX, 0),
        (Kind.EMPTY, Format.EMPTY, None),
        (Kind.EMPTY, Format.EMPTY, None),
        (Kind.TAR, Format.REELFS_PAX, 1),
    ]
    assert [tf.end - tf.start for tf in files[1:3]] == [1, 1]  # just the filemark
    assert files[1].head == b"" and files[1].ended_by == "filemark"
    assert w.eod_block == len(drive.objects)


def test_a_tape_file_cut_short_ends_the_walk_at_end_of_data():
    drive = MemDrive()
    pax_file(drive, ["a"])
    cut = drive.read_position().block
    count = pax_file(drive, ["b", "c"], filemark=False)  # a crash before the filemark
    files, w = walk(drive)
    assert summary(files)[-1] == (1, cut, Kind.TAR, 1, cut + count, "eod")
    assert w.eod_block == cut + count == len(drive.objects)


def test_a_labelled_volume_cut_short_after_its_data():
    drive = MemDrive()
    write_vol1(drive, "WLK001")
    labelled_file(drive, 1, ["a"], trailer=False)  # data and filemark, no EOF1/EOF2
    files, w = walk(drive)
    assert [(tf.kind, tf.ended_by) for tf in files] == [
        (Kind.LABEL, "filemark"),
        (Kind.TAR, "filemark"),
    ]
    assert w.eod_block == files[-1].end == len(drive.objects)


def test_a_blank_tape_has_no_tape_files():
    drive = MemDrive()
    files, w = walk(drive)
    assert files == [] and w.eod_block == 0


def test_a_label_tape_file_at_end_of_data_ends_the_walk():
    drive = MemDrive()
    write_vol1(drive, "WLK001")
    write_header(drive, volser="WLK001", file_id="F1", file_sequence=1, block_size=BS)
    del drive.objects[-1]  # HDR1 HDR2 never closed by their filemark
    files, w = walk(drive)
    assert [(tf.kind, tf.label, tf.ended_by) for tf in files] == [(Kind.LABEL, "VOL1", "eod")]
    assert w.eod_block == 3


def test_foreign_formats_are_told_apart(cpio_bin, tmp_path: Path):
    (tmp_path / "f.txt").write_bytes(b"cpio data\n" * 300)
    newc = subprocess.run(
        [cpio_bin, "-o", "-H", "newc", "--quiet"],
        input=b"f.txt\n",
        cwd=tmp_path,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    gnu = tar_archive(tarfile.GNU_FORMAT, ["g1", "g2"])
    drive = MemDrive()
    records(drive, tar_archive(tarfile.USTAR_FORMAT, ["u"]), 10240)
    records(drive, gnu, 512)  # records of any size: the walker does not care
    records(drive, tar_archive(tarfile.PAX_FORMAT, ["p" * 200]), 10240)
    records(drive, newc, 5120)
    records(drive, gzip.compress(gnu, mtime=0), 10240)
    records(drive, bytes(range(256)) * 40, 1000)
    records(drive, b"HDR1" + b" " * 76, 80)  # a label where a data file could be
    files, w = walk(drive, read_all=True)
    assert [(tf.format, tf.kind, tf.data_file) for tf in files] == [
        (Format.USTAR, Kind.TAR, 0),
        (Format.GNU_TAR, Kind.TAR, 1),
        (Format.PAX, Kind.TAR, 2),
        (Format.CPIO_NEWC, Kind.CPIO, 3),
        (Format.GZIP, Kind.OTHER, 4),
        (Format.UNKNOWN, Kind.OTHER, 5),
        (Format.ANSI_LABEL, Kind.LABEL, None),
    ]
    assert files[1].first_record_length == 512
    assert files[1].end - files[1].start == len(gnu) // 512 + 1
    assert w.eod_block == len(drive.objects)


def test_a_reader_that_stops_early_leaves_the_rest_to_the_walker():
    drive = MemDrive()
    records(drive, tar_archive(tarfile.GNU_FORMAT, ["a", "b"]), 512)
    records(drive, b"x" * 3000, 1000)
    starts = []
    for tf in VolumeWalk(drive, DEFAULT_MAX_RECORD, RecordSource):
        starts.append(tf.start)
        tf.source.read(100)  # a header and no more
        with pytest.raises(RuntimeError):
            tf.end  # noqa: B018 - not finished yet
    assert starts == [0, drive.file_start(1)]
    assert drive.read_position().block == len(drive.objects)


# -- the emulated drive --------------------------------------------------------------------


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[TapeDrive]:
    path = tmp_path / "library"
    create_library(path, drives=1, slots=1, volumes=["WLK001"], capacity=64 << 20)
    lib = open_library(path)
    try:
        inv = lib.changer.inventory()
        (drive_el,) = inv.of_type(ElementType.DRIVE)
        slot = inv.find("WLK001")
        assert slot is not None
        lib.changer.move(slot.address, drive_el.address)
        drive = lib.drives[drive_el.address]
        drive.load()
        drive.set_block_size(BS)  # fixed records, as a mover writes them
        yield drive
    finally:
        lib.close()


def test_a_labelled_volume_on_the_emulated_drive(emulated):
    write_vol1(emulated, "WLK001")
    labelled_file(emulated, 1, ["a", "b"])
    emulated.write_filemarks(1)  # an empty tape file
    labelled_file(emulated, 2, ["c"], trailer=False)
    emulated.set_block_size(0)
    records(emulated, tar_archive(tarfile.USTAR_FORMAT, ["x"]), 10240, filemark=False)
    eod = emulated.read_position().block
    files, w = walk(emulated, read_all=True)
    assert [(tf.kind, tf.label, tf.data_file, tf.ended_by) for tf in files] == [
        (Kind.LABEL, "VOL1", None, "filemark"),
        (Kind.TAR, None, 0, "filemark"),
        (Kind.LABEL, "EOF1", None, "filemark"),
        (Kind.EMPTY, None, None, "filemark"),
        (Kind.LABEL, "HDR1", None, "filemark"),
        (Kind.TAR, None, 1, "filemark"),
        (Kind.TAR, None, 2, "eod"),
    ]
    assert files[6].format == Format.USTAR
    assert [tf.start for tf in files[1:]] == [tf.end for tf in files[:-1]]
    assert w.eod_block == files[-1].end == eod
    assert emulated.status().block_size == 0  # the walk reads in variable-length mode
