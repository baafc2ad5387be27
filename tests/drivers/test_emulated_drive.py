"""The emulated drive behaves like an SSC drive: records, filemarks, end of data, positioning,
spacing, block sizes, capacity and early warning, load and unload, status and counters."""

from __future__ import annotations

import array
import os
from pathlib import Path

import pytest

from drivers.emulated import open_library
from drivers.emulated.image import OBJECT_OVERHEAD
from drivers.tape import (
    BlankCheckError,
    EndOfMediumError,
    ErrorClass,
    FilemarkDetected,
    IllegalRequestError,
    IncorrectLengthError,
    Library,
    NotReadyError,
    Position,
    RecoverableError,
    SpaceUnit,
    TapeDrive,
)
from tests.drivers.emulated_support import CAPACITY, DRIVE0, DRIVE1, EARLY_WARNING, SLOT0


def write_files(drive: TapeDrive, files: list[list[bytes]]) -> None:
    """Each inner list is one tape file: its records, then a filemark."""
    for records in files:
        for r in records:
            drive.write_block(r)
        drive.write_filemarks(1)


def rec(i: int, size: int = 100) -> bytes:
    return bytes([i % 256]) * size


# -- records, filemarks, end of data ---------------------------------------------------------


def test_round_trip_keeps_record_boundaries(emu_drive: TapeDrive) -> None:
    records = [b"a", b"bb" * 1000, b"c" * 65536, bytes(range(256))]
    for r in records:
        assert emu_drive.write_block(r) is False
    emu_drive.rewind()
    assert [emu_drive.read_block(1 << 20) for _ in records] == records


def test_accepts_bytearray_and_memoryviews_of_any_format(emu_drive: TapeDrive) -> None:
    ints = array.array("i", range(100))
    emu_drive.write_block(bytearray(b"xyz"))
    emu_drive.write_block(memoryview(b"0123456789")[2:6])
    emu_drive.write_block(memoryview(ints))
    emu_drive.rewind()
    assert emu_drive.read_block(4096) == b"xyz"
    assert emu_drive.read_block(4096) == b"2345"
    assert emu_drive.read_block(4096) == ints.tobytes()


def test_position_counts_records_and_filemarks(emu_drive: TapeDrive) -> None:
    assert emu_drive.read_position() == Position(0, 0)
    write_files(emu_drive, [[rec(1), rec(2)], [rec(3)]])
    # r r F r F: five logical objects, two filemarks
    assert emu_drive.read_position() == Position(5, 2)
    emu_drive.locate(2)
    assert emu_drive.read_position() == Position(2, 0)
    emu_drive.locate(3)
    assert emu_drive.read_position() == Position(3, 1)


def test_read_stops_after_filemark_then_blank_check_at_eod(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1)], [rec(2)]])
    emu_drive.rewind()
    assert emu_drive.read_block(1000) == rec(1)
    with pytest.raises(FilemarkDetected):
        emu_drive.read_block(1000)
    assert emu_drive.read_position() == Position(2, 1)
    assert emu_drive.read_block(1000) == rec(2)
    with pytest.raises(FilemarkDetected):
        emu_drive.read_block(1000)
    with pytest.raises(BlankCheckError) as e:
        emu_drive.read_block(1000)
    assert e.value.error_class == ErrorClass.BLANK
    assert emu_drive.read_position() == Position(4, 2)
    with pytest.raises(BlankCheckError):  # and stays there
        emu_drive.read_block(1000)


def test_blank_tape_reads_blank_check(emu_drive: TapeDrive) -> None:
    with pytest.raises(BlankCheckError):
        emu_drive.read_block(1000)


def test_record_longer_than_buffer_is_incorrect_length_and_skipped(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(rec(1, 5000))
    emu_drive.write_block(rec(2, 10))
    emu_drive.rewind()
    with pytest.raises(IncorrectLengthError) as e:
        emu_drive.read_block(4096)
    assert e.value.record_length == 5000
    assert e.value.residual == 4096 - 5000
    assert e.value.error_class == ErrorClass.RECOVERABLE
    assert emu_drive.read_position() == Position(1, 0)
    assert emu_drive.read_block(4096) == rec(2, 10)


def test_shorter_record_than_buffer_is_returned_whole(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(b"short")
    emu_drive.rewind()
    assert emu_drive.read_block(1 << 20) == b"short"


def test_writing_in_the_middle_makes_a_new_end_of_data(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2), rec(3)], [rec(4)]])
    emu_drive.locate(1)
    emu_drive.write_block(b"new")
    assert emu_drive.read_position() == Position(2, 0)
    emu_drive.rewind()
    assert emu_drive.read_block(1000) == rec(1)
    assert emu_drive.read_block(1000) == b"new"
    with pytest.raises(BlankCheckError):
        emu_drive.read_block(1000)
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(2, 0)


def test_filemarks_in_the_middle_also_truncate(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2)], [rec(3)], [rec(4)]])
    emu_drive.locate(1)
    emu_drive.write_filemarks(2)
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(3, 2)


def test_write_filemarks_zero_flushes_without_moving(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2)]])
    emu_drive.locate(1)
    emu_drive.write_filemarks(0)
    emu_drive.write_filemarks(0, immediate=True)
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(3, 1)


def test_rejects_empty_negative_and_oversized_requests(emu_drive: TapeDrive) -> None:
    with pytest.raises(IllegalRequestError):
        emu_drive.write_block(b"")
    with pytest.raises(IllegalRequestError):
        emu_drive.write_block(bytes(1 << 24))
    with pytest.raises(IllegalRequestError):
        emu_drive.write_filemarks(-1)
    with pytest.raises(IllegalRequestError):
        emu_drive.locate(-1)
    with pytest.raises(IllegalRequestError):
        emu_drive.read_block(0)
    with pytest.raises(IllegalRequestError):
        emu_drive.set_block_size(-1)
    with pytest.raises(IllegalRequestError):
        emu_drive.space(1, "records")  # type: ignore[arg-type]
    assert emu_drive.read_position() == Position(0, 0)


# -- locate and space ------------------------------------------------------------------------


def test_locate_past_end_of_data_is_blank_check_at_eod(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2)]])
    emu_drive.locate(3)  # EOD itself is a valid position
    assert emu_drive.read_position() == Position(3, 1)
    emu_drive.rewind()
    with pytest.raises(BlankCheckError):
        emu_drive.locate(10)
    assert emu_drive.read_position() == Position(3, 1)


def test_locate_reads_the_right_record_among_many(emu_drive: TapeDrive) -> None:
    files = [[rec(f * 10 + i, 17 + i) for i in range(f + 1)] for f in range(20)]
    write_files(emu_drive, files)
    block = 0
    expected: dict[int, tuple[bytes, int]] = {}
    for f, records in enumerate(files):
        for r in records:
            expected[block] = (r, f)
            block += 1
        block += 1  # the filemark
    for block in sorted(expected, reverse=True):
        emu_drive.locate(block)
        data, f = expected[block]
        assert emu_drive.read_position() == Position(block, f)
        assert emu_drive.read_block(1000) == data


def test_space_blocks_forward_and_backward(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(i) for i in range(5)]])
    emu_drive.rewind()
    emu_drive.space(3)
    assert emu_drive.read_block(1000) == rec(3)
    emu_drive.space(-2)
    assert emu_drive.read_block(1000) == rec(2)
    emu_drive.space(0)
    assert emu_drive.read_position() == Position(3, 0)


def test_space_blocks_forward_stops_after_filemark(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2)], [rec(3)]])
    emu_drive.rewind()
    with pytest.raises(FilemarkDetected) as e:
        emu_drive.space(5)
    assert e.value.residual == 3  # two blocks spaced
    assert emu_drive.read_position() == Position(3, 1)
    assert emu_drive.read_block(1000) == rec(3)


def test_space_blocks_backward_stops_before_filemark(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1)], [rec(2), rec(3)]])
    with pytest.raises(FilemarkDetected) as e:
        emu_drive.space(-4)  # from EOD (5): back over F at 4, stop on its BOT side
    assert e.value.residual == 4
    assert emu_drive.read_position() == Position(4, 1)
    emu_drive.locate(4)
    with pytest.raises(FilemarkDetected) as e:
        emu_drive.space(-3)  # over records 3 and 2, then the filemark at 1
    assert e.value.residual == 1
    assert emu_drive.read_position() == Position(1, 0)


def test_space_blocks_into_end_of_data(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(rec(1))
    emu_drive.write_block(rec(2))
    emu_drive.rewind()
    with pytest.raises(BlankCheckError) as e:
        emu_drive.space(5)
    assert e.value.residual == 3
    assert emu_drive.read_position() == Position(2, 0)


def test_space_backward_past_bot_reports_residual(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1), rec(2)]])
    emu_drive.locate(2)
    with pytest.raises(RecoverableError) as e:
        emu_drive.space(-5)
    assert e.value.residual == 3
    assert emu_drive.read_position() == Position(0, 0)
    emu_drive.locate(3)
    with pytest.raises(RecoverableError) as e:
        emu_drive.space(-3, SpaceUnit.FILEMARKS)
    assert e.value.residual == 2
    assert emu_drive.read_position() == Position(0, 0)


def test_space_filemarks(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1)], [rec(2)], [rec(3)], [rec(4)]])
    emu_drive.rewind()
    emu_drive.space(2, SpaceUnit.FILEMARKS)
    assert emu_drive.read_position() == Position(4, 2)
    assert emu_drive.read_block(1000) == rec(3)
    emu_drive.space(1, SpaceUnit.FILEMARKS)
    assert emu_drive.read_position() == Position(6, 3)
    # backward: stop on the BOT side of the N-th filemark back
    emu_drive.space(-1, SpaceUnit.FILEMARKS)
    assert emu_drive.read_position() == Position(5, 2)
    emu_drive.space(-2, SpaceUnit.FILEMARKS)
    assert emu_drive.read_position() == Position(1, 0)
    with pytest.raises(BlankCheckError) as e:
        emu_drive.space(7, SpaceUnit.FILEMARKS)
    assert e.value.residual == 3
    assert emu_drive.read_position() == Position(8, 4)


def test_space_to_end_of_data_then_append(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1)], [rec(2)]])
    emu_drive.rewind()
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(4, 2)
    emu_drive.write_block(rec(3))
    emu_drive.locate(4)
    assert emu_drive.read_block(1000) == rec(3)


# -- block size ------------------------------------------------------------------------------


def test_fixed_block_mode_writes_only_exact_blocks(emu_drive: TapeDrive) -> None:
    emu_drive.set_block_size(512)
    assert emu_drive.status().block_size == 512
    emu_drive.write_block(rec(1, 512))
    with pytest.raises(IllegalRequestError):
        emu_drive.write_block(rec(1, 511))
    with pytest.raises(IllegalRequestError):
        emu_drive.write_block(rec(1, 1024))
    assert emu_drive.read_position() == Position(1, 0)


def test_fixed_block_mode_read_of_other_length_is_an_error(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(rec(1, 300))
    emu_drive.write_block(rec(2, 512))
    emu_drive.rewind()
    emu_drive.set_block_size(512)
    with pytest.raises(IncorrectLengthError) as e:
        emu_drive.read_block(512)
    assert e.value.record_length == 300
    assert emu_drive.read_position() == Position(1, 0)
    assert emu_drive.read_block(512) == rec(2, 512)
    emu_drive.rewind()
    with pytest.raises(IllegalRequestError):
        emu_drive.read_block(100)  # buffer smaller than a block
    emu_drive.set_block_size(0)
    assert emu_drive.read_block(512) == rec(1, 300)


# -- capacity --------------------------------------------------------------------------------


def fill_to(drive: TapeDrive, used: int, record: int = 32 * 1024) -> None:
    """Write records until `used` bytes of the medium are used (exactly)."""
    while used >= record + OBJECT_OVERHEAD:
        drive.write_block(bytes(record))
        used -= record + OBJECT_OVERHEAD
    if used:
        assert used > OBJECT_OVERHEAD
        drive.write_block(bytes(used - OBJECT_OVERHEAD))


def test_early_warning_then_end_of_medium(emu_drive: TapeDrive) -> None:
    assert emu_drive.remaining_capacity() == EARLY_WARNING
    fill_to(emu_drive, EARLY_WARNING)
    assert emu_drive.remaining_capacity() == 0
    assert emu_drive.status().early_warning is False
    # the first record past early warning is written and says so
    assert emu_drive.write_block(b"x" * 100) is True
    assert emu_drive.status().early_warning is True
    emu_drive.write_filemarks(1)  # filemarks still fit
    left = CAPACITY - EARLY_WARNING - 100 - 2 * OBJECT_OVERHEAD
    position = emu_drive.read_position()
    with pytest.raises(EndOfMediumError) as e:
        emu_drive.write_block(bytes(left - OBJECT_OVERHEAD + 1))
    assert e.value.error_class == ErrorClass.END_OF_MEDIUM
    assert emu_drive.read_position() == position  # nothing written
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == position
    # exactly to the physical end is fine; then not even a filemark fits
    assert emu_drive.write_block(bytes(left - OBJECT_OVERHEAD)) is True
    with pytest.raises(EndOfMediumError):
        emu_drive.write_filemarks(1)
    with pytest.raises(EndOfMediumError):
        emu_drive.write_block(b"y")


def test_rewriting_from_the_start_frees_capacity(emu_drive: TapeDrive) -> None:
    fill_to(emu_drive, EARLY_WARNING + 1000)
    assert emu_drive.remaining_capacity() == 0
    emu_drive.rewind()
    assert emu_drive.write_block(b"again") is False
    assert emu_drive.remaining_capacity() == EARLY_WARNING - OBJECT_OVERHEAD - 5


def test_end_of_medium_in_the_middle_leaves_the_tape_alone(emu_drive: TapeDrive) -> None:
    fill_to(emu_drive, CAPACITY - 1000)
    emu_drive.locate(1)
    with pytest.raises(EndOfMediumError):
        emu_drive.write_block(bytes(CAPACITY))
    emu_drive.rewind()
    assert emu_drive.read_block(1 << 16) == bytes(32 * 1024)
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position().block > 20


def test_inserted_cartridge_has_its_own_capacity(emu_libdir: Path, emu_library: Library) -> None:
    from drivers.emulated import insert_cartridge

    address = insert_cartridge(emu_libdir, "SMALL1", capacity=10_000)
    emu_library.changer.move(address, DRIVE1)
    drive = emu_library.drives[DRIVE1]
    drive.load()
    # the early-warning point keeps the library's fraction
    assert drive.remaining_capacity() == 10_000 * EARLY_WARNING // CAPACITY
    with pytest.raises(EndOfMediumError):
        drive.write_block(bytes(10_000))


# -- load, unload, status, statistics ----------------------------------------------------------


def test_operations_without_a_cartridge_are_not_ready(emu_library: Library) -> None:
    drive = emu_library.drives[DRIVE0]
    with pytest.raises(NotReadyError):
        drive.load()
    for op in (
        drive.rewind,
        drive.read_position,
        lambda: drive.read_block(10),
        lambda: drive.write_block(b"x"),
        lambda: drive.write_filemarks(1),
        lambda: drive.locate(0),
        lambda: drive.space(1),
        drive.unload,
    ):
        with pytest.raises(NotReadyError):
            op()
    status = drive.status()
    assert (status.ready, status.loaded, status.volume) == (False, False, None)
    assert drive.remaining_capacity() is None


def test_cartridge_moved_in_but_not_loaded_is_not_ready(emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    with pytest.raises(NotReadyError, match="not loaded"):
        drive.write_block(b"x")
    status = drive.status()
    assert (status.ready, status.loaded, status.volume) == (False, False, "VOL001")


def test_unload_rewinds_and_data_survives_reload(emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    write_files(drive, [[rec(1), rec(2)]])
    drive.unload()
    assert drive.status().loaded is False
    emu_library.changer.move(DRIVE0, SLOT0)
    emu_library.changer.move(SLOT0, DRIVE1)
    other = emu_library.drives[DRIVE1]
    other.load()
    assert other.read_position() == Position(0, 0)
    assert other.read_block(1000) == rec(1)
    other.space(0, SpaceUnit.END_OF_DATA)
    assert other.read_position() == Position(3, 1)


def test_load_twice_rewinds(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(rec(1))
    emu_drive.load()
    assert emu_drive.read_position() == Position(0, 0)


def test_status_reports_the_mounted_volume(emu_drive: TapeDrive) -> None:
    emu_drive.write_block(rec(1))
    status = emu_drive.status()
    assert status.ready and status.loaded
    assert status.volume == "VOL001"
    assert status.position == Position(1, 0)
    assert status.write_protected is False
    assert status.block_size == 0


def test_statistics_count_the_current_mount(emu_drive: TapeDrive) -> None:
    write_files(emu_drive, [[rec(1, 1000), rec(2, 24)]])
    emu_drive.rewind()
    emu_drive.read_block(4096)
    emu_drive.read_block(4096)
    with pytest.raises(FilemarkDetected):
        emu_drive.read_block(4096)
    stats = emu_drive.statistics()
    assert stats["bytes_written"] == 1024
    assert stats["records_written"] == 2
    assert stats["filemarks_written"] == 1
    assert stats["bytes_read"] == 1024
    assert stats["records_read"] == 2
    assert stats["filemarks_read"] == 1
    assert stats["read_errors"] == stats["write_errors"] == stats["drive_errors"] == 0
    emu_drive.unload()
    emu_drive.load()  # a new mount starts from zero
    assert emu_drive.statistics()["bytes_written"] == 0


def test_drives_have_names_and_distinct_serials(emu_library: Library) -> None:
    drives = emu_library.drives
    assert [d.name for d in drives.values()] == ["drive0", "drive1"]
    assert len({d.serial for d in drives.values()}) == 2


def test_a_second_process_cannot_drive_a_loaded_tape(
    emu_libdir: Path, emu_drive: TapeDrive
) -> None:
    emu_drive.write_block(rec(1))
    intruder = open_library(emu_libdir)  # as another daemon on the same library would
    try:
        other = intruder.drives[DRIVE0]
        status = other.status()
        assert status.ready is False and "in use by another process" in status.detail
        with pytest.raises(NotReadyError, match="in use"):
            other.unload()
    finally:
        intruder.close()
    assert emu_drive.read_position() == Position(1, 0)


def test_close_keeps_the_cartridge_loaded(emu_libdir: Path, emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    drive.write_block(rec(7))
    drive.close()
    again = open_library(emu_libdir)
    try:
        d = again.drives[DRIVE0]
        assert d.status().loaded is True
        assert d.read_block(1000) == rec(7)  # adopted at BOT
    finally:
        again.close()


def test_large_records_and_slices_round_trip(emu_drive: TapeDrive) -> None:
    big = os.urandom(1 << 20)
    with pytest.raises(EndOfMediumError):
        emu_drive.write_block(big)  # larger than the whole cartridge
    payload = memoryview(bytearray(big))[: 256 * 1024]
    emu_drive.write_block(payload)
    emu_drive.rewind()
    assert emu_drive.read_block(1 << 20) == big[: 256 * 1024]
