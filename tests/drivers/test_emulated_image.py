"""The tape image format: the documented bytes, torn records after a crash, power loss,
damaged images."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from drivers.emulated.image import read_header
from drivers.tape import (
    BlankCheckError,
    ErrorClass,
    FilemarkDetected,
    Library,
    MediaError,
    Position,
    SpaceUnit,
    TapeDrive,
)
from tests.drivers.emulated_support import CAPACITY, DRIVE0, EARLY_WARNING, SLOT0, run_python

STATE = struct.Struct("<8sH6x16sQ")
ENTRY = struct.Struct("<B3xIQ")


def image_of(libdir: Path, barcode: str = "VOL001") -> Path:
    return libdir / "tapes" / f"{barcode}.tape"


def index_of(libdir: Path, barcode: str = "VOL001") -> Path:
    return libdir / "tapes" / f"{barcode}.index"


def entries(index: Path) -> list[tuple[int, int, int]]:
    raw = index.read_bytes()[1024:]
    return [ENTRY.unpack_from(raw, at) for at in range(0, len(raw) - 15, 16)]


def entry(number: int, kind: int, end: int) -> bytes:
    return ENTRY.pack(kind, zlib.crc32(struct.pack("<QBQ", number, kind, end)), end)


def reload(drive: TapeDrive) -> None:
    drive.unload()
    drive.load()


def set_index_boot(libdir: Path, boot: bytes) -> None:
    """Make the index look written before a reboot (as after a power loss)."""
    with open(index_of(libdir), "r+b") as f:
        f.seek(512 + 16)
        f.write(boot)


# -- the documented bytes ----------------------------------------------------------------------


def test_blank_cartridge_is_an_empty_payload_file_and_an_index(emu_libdir: Path) -> None:
    assert image_of(emu_libdir).read_bytes() == b""
    raw = index_of(emu_libdir).read_bytes()
    assert len(raw) == 1024
    assert raw[:8] == b"REELTAPE"
    version, entries_at, flags, capacity, early_warning = struct.unpack_from("<HHIQQ", raw, 8)
    assert (version, entries_at, flags) == (1, 1024, 0)
    assert (capacity, early_warning) == (CAPACITY, EARLY_WARNING)
    assert raw[40:56].rstrip(b"\0") == b"VOL001"
    assert struct.unpack_from("<I", raw, 508)[0] == zlib.crc32(raw[:508])
    magic, entry_size, _boot, synced = STATE.unpack_from(raw, 512)
    assert (magic, entry_size, synced) == (b"REELINDX", 16, 0)
    cleaning = read_header(image_of(emu_libdir, "CLN001"))
    assert cleaning.cleaning and cleaning.cleaning_limit == 2


def test_payloads_back_to_back_and_one_entry_per_object(
    emu_libdir: Path, emu_drive: TapeDrive
) -> None:
    emu_drive.write_block(b"hello")
    emu_drive.write_filemarks(1)
    emu_drive.write_block(b"world!")
    emu_drive.unload()  # a sync point, and the index is trimmed to its entries
    assert image_of(emu_libdir).read_bytes() == b"hello" + b"world!"
    index = index_of(emu_libdir).read_bytes()
    assert len(index) == 1024 + 3 * 16
    assert index[1024:] == entry(0, 1, 5) + entry(1, 2, 5) + entry(2, 1, 11)
    _, _, boot, synced = STATE.unpack_from(index, 512)
    assert synced == 3  # all three objects durable
    expected = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    assert boot == bytes.fromhex(expected)


def test_large_records_are_page_aligned(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    records = [bytes([i]) * 65536 for i in range(4)]
    for r in records:
        emu_drive.write_block(r)
    emu_drive.write_filemarks(1)
    raw = image_of(emu_libdir).read_bytes()
    for i, r in enumerate(records):
        at = i * 65536
        assert at % 4096 == 0
        assert raw[at : at + 65536] == r


def test_index_is_rebuilt_on_load(emu_drive: TapeDrive) -> None:
    for f in range(3):
        for i in range(f + 2):
            emu_drive.write_block(bytes([f, i]) * (i + 1))
        emu_drive.write_filemarks(1)
    reload(emu_drive)
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(12, 3)
    emu_drive.locate(8)
    assert emu_drive.read_position() == Position(8, 2)
    assert emu_drive.read_block(100) == bytes([2, 1]) * 2


def test_index_grows_past_its_first_mapping(emu_drive: TapeDrive) -> None:
    for i in range(10_000):
        emu_drive.write_block(i.to_bytes(2, "little"))
    reload(emu_drive)
    emu_drive.locate(9_999)
    assert emu_drive.read_block(10) == (9_999).to_bytes(2, "little")


# -- crashes -----------------------------------------------------------------------------------


def test_torn_last_record_reads_as_end_of_data(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    emu_drive.write_block(b"a" * 1000)
    emu_drive.write_filemarks(1)
    emu_drive.unload()
    # What a process killed while writing a record's payload leaves: payload, no entry.
    with open(image_of(emu_libdir), "ab") as f:
        f.write(b"b" * 3000)
    emu_drive.load()
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(2, 1)
    with pytest.raises(BlankCheckError):
        emu_drive.read_block(10_000)
    # the next write replaces the torn bytes
    emu_drive.write_block(b"c" * 10)
    emu_drive.write_filemarks(1)
    assert image_of(emu_libdir).stat().st_size == 1000 + 10
    reload(emu_drive)
    emu_drive.locate(2)
    assert emu_drive.read_block(100) == b"c" * 10
    with pytest.raises(FilemarkDetected):
        emu_drive.read_block(100)


@pytest.mark.parametrize(
    "tail",
    [
        entry(1, 1, 14)[:9],  # half an entry
        bytes(160),  # zeros
        entry(1, 1, 14)[:4] + b"\xff\xff\xff\xff" + entry(1, 1, 14)[8:],  # bad CRC
        entry(5, 1, 14),  # a valid entry, but for another object number
        entry(1, 1, 5000),  # a record whose payload never reached the file
        entry(1, 3, 14),  # an unknown kind
        entry(1, 2, 7),  # a filemark with a payload
        os.urandom(64),  # anything else
    ],
)
def test_invalid_entries_after_the_last_object_are_not_data(
    emu_libdir: Path, emu_drive: TapeDrive, tail: bytes
) -> None:
    emu_drive.write_block(b"good")
    emu_drive.unload()
    with open(image_of(emu_libdir), "ab") as f:
        f.write(b"0123456789")
    with open(index_of(emu_libdir), "ab") as f:
        f.write(tail)
    emu_drive.load()
    assert emu_drive.read_block(100) == b"good"
    with pytest.raises(BlankCheckError):
        emu_drive.read_block(100)
    emu_drive.unload()
    assert len(entries(index_of(emu_libdir))) == 1  # forgotten for good


def test_a_valid_entry_after_the_last_object_is_data(
    emu_libdir: Path, emu_drive: TapeDrive
) -> None:
    """The control for the test above: the same files with a well-formed entry."""
    emu_drive.write_block(b"good")
    emu_drive.unload()
    with open(image_of(emu_libdir), "ab") as f:
        f.write(b"0123456789")
    with open(index_of(emu_libdir), "ab") as f:
        f.write(entry(1, 1, 14))
    emu_drive.load()
    assert emu_drive.read_block(100) == b"good"
    assert emu_drive.read_block(100) == b"0123456789"


def test_record_torn_by_a_killed_writer(emu_libdir: Path, emu_library: Library) -> None:
    """A process killed with a record half written: the next process sees the records
    before it and end of data where the torn one started."""
    emu_library.changer.move(SLOT0, DRIVE0)
    result = run_python(
        """
        import os, signal, sys
        from pathlib import Path
        from drivers.emulated import open_library
        lib = open_library(Path(sys.argv[1]))
        drive = lib.drives[256]
        drive.load()
        for i in range(3):
            drive.write_block(bytes([i]) * 4096)
        drive.write_filemarks(1)
        drive.write_block(b"unsynced")
        # the start of a sixth record's payload, as a kill in the middle of pwrite leaves it
        image = drive._image
        os.pwrite(image.fd, b"x" * 1000, image.ends[5])
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(emu_libdir),
    )
    assert result.returncode == -9, result.stderr
    drive = emu_library.drives[DRIVE0]
    assert drive.status().loaded is True
    drive.space(0, SpaceUnit.END_OF_DATA)
    assert drive.read_position() == Position(5, 1)
    drive.locate(4)
    assert drive.read_block(4096) == b"unsynced"  # same boot: the page cache kept it
    drive.locate(2)
    assert drive.read_block(4096) == bytes([2]) * 4096


def test_after_power_loss_only_synced_objects_count(emu_libdir: Path, emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    for i in range(3):
        drive.write_block(bytes([i]) * 100)
    drive.write_filemarks(1)  # sync point: 4 objects durable
    drive.write_block(b"not synced")
    drive.write_filemarks(1, immediate=True)  # not a sync point
    drive.close()  # no unload, so no sync: as if the machine lost power now
    set_index_boot(emu_libdir, b"another boot....")
    drive.load()
    drive.space(0, SpaceUnit.END_OF_DATA)
    assert drive.read_position() == Position(4, 1)
    drive.close()
    drive.load()  # in this boot now: the untrusted entries do not come back
    drive.space(0, SpaceUnit.END_OF_DATA)
    assert drive.read_position() == Position(4, 1)


def test_overwriting_synced_data_then_power_loss(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    """Old entries must never describe new payload: overwriting durable objects first
    makes the shorter durable count durable."""
    for i in range(5):
        emu_drive.write_block(bytes([i]) * 100)
    emu_drive.write_filemarks(1)
    emu_drive.locate(2)
    emu_drive.write_block(b"new" * 40)  # overwrites record 2's payload
    emu_drive.close()
    set_index_boot(emu_libdir, b"another boot....")
    emu_drive.load()
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(2, 0)
    emu_drive.rewind()
    assert emu_drive.read_block(1000) == bytes([0]) * 100


def test_same_boot_keeps_unsynced_objects(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    emu_drive.write_block(b"synced")
    emu_drive.write_filemarks(1)
    emu_drive.write_block(b"unsynced")
    emu_drive.close()
    emu_drive.load()
    emu_drive.space(0, SpaceUnit.END_OF_DATA)
    assert emu_drive.read_position() == Position(3, 1)


# -- damage ------------------------------------------------------------------------------------


def test_damaged_cartridge_header_is_a_media_error(emu_libdir: Path, emu_library: Library) -> None:
    index = index_of(emu_libdir)
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0xFF
    index.write_bytes(bytes(raw))
    emu_library.changer.move(SLOT0, DRIVE0)
    with pytest.raises(MediaError, match="checksum") as e:
        emu_library.drives[DRIVE0].load()
    assert e.value.error_class == ErrorClass.MEDIA
    assert emu_library.drives[DRIVE0].status().loaded is False
    emu_library.changer.move(DRIVE0, SLOT0)  # a failed load leaves it movable


def test_unknown_image_version_is_refused(emu_libdir: Path, emu_library: Library) -> None:
    index = index_of(emu_libdir)
    raw = bytearray(index.read_bytes())
    struct.pack_into("<H", raw, 8, 99)
    struct.pack_into("<I", raw, 508, zlib.crc32(raw[:508]))
    index.write_bytes(bytes(raw))
    emu_library.changer.move(SLOT0, DRIVE0)
    with pytest.raises(MediaError, match="version 99"):
        emu_library.drives[DRIVE0].load()


def test_damaged_index_state_is_a_media_error(emu_libdir: Path, emu_library: Library) -> None:
    index = index_of(emu_libdir)
    raw = bytearray(index.read_bytes())
    raw[512:520] = b"XXXXXXXX"
    index.write_bytes(bytes(raw))
    emu_library.changer.move(SLOT0, DRIVE0)
    with pytest.raises(MediaError, match="index state is damaged"):
        emu_library.drives[DRIVE0].load()


@pytest.mark.parametrize("suffix", ["tape", "index"])
def test_missing_file_is_a_media_error(emu_libdir: Path, emu_library: Library, suffix: str) -> None:
    (emu_libdir / "tapes" / f"VOL001.{suffix}").unlink()
    emu_library.changer.move(SLOT0, DRIVE0)
    with pytest.raises(MediaError, match=rf"VOL001\.{suffix} is missing"):
        emu_library.drives[DRIVE0].load()
    assert emu_library.drives[DRIVE0].status().loaded is False


def test_image_of_another_cartridge_is_refused(emu_libdir: Path, emu_library: Library) -> None:
    index_of(emu_libdir).write_bytes(index_of(emu_libdir, "VOL002").read_bytes())
    emu_library.changer.move(SLOT0, DRIVE0)
    with pytest.raises(MediaError, match="labelled VOL001 holds the image of VOL002"):
        emu_library.drives[DRIVE0].load()
