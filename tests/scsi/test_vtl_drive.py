"""The SSC drive driver against tgt's virtual tape drives: loading, records and filemarks,
positioning (emulated on tgt), fixed blocks, and what tgt lacks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from drivers.scsi import ScsiTapeDrive, cdb
from drivers.tape import (
    BlankCheckError,
    FilemarkDetected,
    IllegalRequestError,
    IncorrectLengthError,
    Library,
    NotReadyError,
    Position,
    SpaceUnit,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def mounted(vtl, library: Library) -> Iterator[ScsiTapeDrive]:
    """RL0001 loaded in drive element 500, written from the beginning by each test."""
    library.changer.move(vtl.tapes["RL0001"], 500)
    drive = library.drives[500]
    assert isinstance(drive, ScsiTapeDrive)
    drive.load()
    yield drive
    drive.set_block_size(0)  # tgt keeps the block length per drive across tapes


def read_file(drive: ScsiTapeDrive, size: int = 1 << 20) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(drive.read_block(size))
        except FilemarkDetected:
            return out


def test_load_status_unload(vtl, library):
    drive = library.drives[500]
    library.changer.move(vtl.tapes["RL0002"], 500)
    drive.load()
    st = drive.status()
    assert st.ready and st.loaded and not st.write_protected
    assert st.volume == "RL0002" and st.block_size == 0
    assert st.position == Position(0, 0) and not st.early_warning
    drive.unload()
    st = drive.status()
    assert not st.ready and not st.loaded and st.volume == "RL0002"
    drive.load()  # the same cartridge again, without the changer
    assert drive.status().ready
    drive.unload()
    library.changer.move(500, vtl.tapes["RL0002"])
    assert drive.volume is None
    with pytest.raises(NotReadyError):
        drive.load()  # the changer took it: no LOAD may be sent to tgt now


def test_load_of_an_empty_drive_is_not_ready(library):
    with pytest.raises(NotReadyError):
        library.drives[501].load()


def test_a_loaded_tape_cannot_be_pulled(vtl, library, mounted):
    with pytest.raises(IllegalRequestError, match="53/02"):
        library.changer.move(500, vtl.tapes["RL0001"])


def test_records_and_filemarks_round_trip(mounted):
    d = mounted
    files = [
        [os.urandom(1), os.urandom(1000), os.urandom(65536)],
        [os.urandom(262144), os.urandom(300000)],
        [b"tail" * 10],
    ]
    for f in files:
        for rec in f:
            assert d.write_block(rec) is False
        d.write_filemarks(1)
    assert d.read_position() == Position(9, 3)
    d.rewind()
    # a 1 MiB buffer: tgt < 1.0.94 sends the wrong byte count for the shorter records
    assert [read_file(d) for _ in files] == files
    with pytest.raises(BlankCheckError):
        d.read_block(1 << 20)
    assert d.read_position() == Position(9, 3)
    stats = d.statistics()
    assert stats["bytes_written"] == sum(len(r) for f in files for r in f)
    assert stats["bytes_read"] == stats["bytes_written"]
    assert stats["filemarks_written"] == 3 and stats["filemarks_read"] == 3


def test_record_longer_than_the_buffer(mounted):
    d = mounted
    d.write_block(b"x" * 5000)
    d.write_block(b"y" * 10)
    d.rewind()
    with pytest.raises(IncorrectLengthError) as e:
        d.read_block(4096)
    assert e.value.record_length == 5000
    assert d.read_block(4096) == b"y" * 10  # the drive is past the long record


def test_locate_space_and_position(mounted):
    d = mounted
    # objects: 0 a, 1 b, 2 FM, 3 c, 4 d, 5 FM, 6 e, 7 FM ; EOD at 8
    for rec in (b"a", b"b"):
        d.write_block(rec * 100)
    d.write_filemarks(1)
    for rec in (b"c", b"d"):
        d.write_block(rec * 100)
    d.write_filemarks(1)
    d.write_block(b"e" * 100)
    d.write_filemarks(1)
    d.locate(3)
    assert d.read_position() == Position(3, None)
    assert d.read_block(1000) == b"c" * 100
    d.locate(8)  # EOD itself
    with pytest.raises(BlankCheckError):
        d.read_block(1000)
    with pytest.raises(BlankCheckError):
        d.locate(12)
    assert d.read_position() == Position(8, None)
    d.rewind()
    with pytest.raises(FilemarkDetected) as e:
        d.space(5)
    assert e.value.residual == 3 and d.read_position() == Position(3, 1)
    d.space(1)
    assert d.read_block(1000) == b"d" * 100
    d.space(1, SpaceUnit.FILEMARKS)
    assert d.read_position() == Position(6, 2)
    d.space(-1, SpaceUnit.FILEMARKS)  # to the BOP side of the filemark at 5
    assert d.read_position() == Position(5, 1)
    d.space(-1)  # over object 4, a record
    assert d.read_position() == Position(4, 1)
    with pytest.raises(FilemarkDetected) as e:
        d.space(-2)  # over object 3, then the filemark at 2 stops it
    assert e.value.residual == 1 and d.read_position() == Position(2, 0)
    d.locate(7)
    with pytest.raises(FilemarkDetected) as e:
        d.space(-3)  # objects 6, then the filemark at 5 stops it
    assert e.value.residual == 2 and d.read_position().block == 5
    d.space(0, SpaceUnit.END_OF_DATA)
    assert d.read_position() == Position(8, None)
    d.rewind()
    d.space(2, SpaceUnit.FILEMARKS)
    assert d.read_position() == Position(6, 2)
    assert d.read_block(1000) == b"e" * 100


def test_fixed_block_mode(mounted):
    d = mounted
    d.set_block_size(512)
    assert d.status().block_size == 512
    d.write_block(bytes(range(256)) * 4)  # two blocks
    d.write_block(b"z" * 512)
    d.write_filemarks(1)
    d.rewind()
    assert d.read_block(512) == bytes(range(256)) * 2
    assert d.read_block(512) == bytes(range(256)) * 2
    assert d.read_block(4096) == b"z" * 512
    with pytest.raises(FilemarkDetected):
        d.read_block(512)
    with pytest.raises(BlankCheckError):
        d.read_block(512)
    assert d.read_position() == Position(4, 1)


def test_what_tgt_does_not_have(mounted):
    d = mounted
    assert d.quirks.name == "tgt"
    assert d.remaining_capacity() is None
    assert d.alerts() == frozenset()
    assert d.set_compression(True) is False
    assert d.needs_cleaning() is False
    assert d.block_limits() == (9, 1 << 20, 4)  # granularity 2^9, 1 MiB, 4 bytes


def test_full_sense_is_surfaced(mounted):
    d = mounted
    d.write_filemarks(1)
    d.rewind()
    r = d.device.transfer(cdb.read6(4096), data_in=4096)
    assert r.check_condition and r.sense is not None
    assert r.sense.filemark and r.sense.information == 4096
    assert r.sense.raw[0] & 0x7F == 0x70 and len(r.sense.raw) >= 18
    d.rewind()
