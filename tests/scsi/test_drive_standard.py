"""`ScsiTapeDrive` on a standards-conforming drive (the in-memory SSC model of fake_ssc.py):
the paths tgt cannot show — LOCATE, READ POSITION, LOG SENSE, early warning, VOLUME
OVERFLOW, SILI, media vs drive failures, unit attentions, cleaning."""

from __future__ import annotations

import pytest

from drivers.scsi.drive import BeginningOfMediumError, CleaningCartridgeError, ScsiTapeDrive
from drivers.scsi.quirks import STANDARD
from drivers.tape import (
    BlankCheckError,
    DriveError,
    EndOfMediumError,
    ErrorClass,
    FilemarkDetected,
    IncorrectLengthError,
    MediaError,
    NotReadyError,
    Position,
    RecoverableError,
    SpaceUnit,
)
from tests.scsi.fake_ssc import FM, FakeSscDevice


def opcodes(dev: FakeSscDevice) -> list[int]:
    return [c[0] for c in dev.log]


@pytest.fixture
def dev() -> FakeSscDevice:
    return FakeSscDevice()


@pytest.fixture
def drive(dev) -> ScsiTapeDrive:
    d = ScsiTapeDrive(dev, name="lto")
    d.poll_interval = 0.001
    d.load()
    return d


def test_identity_and_standard_quirks(dev):
    d = ScsiTapeDrive(dev)
    assert d.quirks is STANDARD
    assert d.serial == "1013000123" and d.name == "1013000123"
    assert d.identity.vendor == "IBM" and d.identity.product == "ULT3580-TD8"
    assert d.identity.t10_ids == ("IBM     ULT3580-TD8     1013000123",)


def test_load_sends_load_and_prevents_removal(dev, drive):
    assert 0x1B in opcodes(dev) and dev.loaded and dev.prevented
    drive.unload()
    assert not dev.loaded and not dev.prevented


def test_load_without_cartridge_is_not_ready(dev):
    dev.cartridge = False
    d = ScsiTapeDrive(dev)
    with pytest.raises(NotReadyError):
        d.load()


def test_records_filemarks_and_position(dev, drive):
    drive.write_block(b"a" * 10)
    drive.write_block(b"b" * 20)
    drive.write_filemarks(1)
    drive.write_block(b"c" * 30)
    assert drive.read_position() == Position(4, 1)
    drive.rewind()
    assert drive.read_block(100) == b"a" * 10  # SILI: GOOD with the transport residual
    assert drive.read_position() == Position(1, 0)
    drive.locate(3)
    assert 0x92 in opcodes(dev) and 0x11 not in opcodes(dev)  # LOCATE(16), no SPACE
    assert drive.read_block(100) == b"c" * 30
    with pytest.raises(BlankCheckError):
        drive.read_block(100)
    drive.locate(2)
    with pytest.raises(FilemarkDetected):
        drive.read_block(100)
    assert drive.read_position() == Position(3, 1)


def test_long_record_is_incorrect_length_with_its_size(dev, drive):
    dev.objects = [b"x" * 1000]
    with pytest.raises(IncorrectLengthError) as e:
        drive.read_block(100)
    assert e.value.record_length == 1000 and e.value.residual == -900
    assert e.value.error_class is ErrorClass.RECOVERABLE
    assert drive.read_position().block == 1


def test_short_record_without_sili(dev):
    d = ScsiTapeDrive(dev, quirks=STANDARD.with_(sili=False))
    d.load()
    dev.objects = [b"x" * 10]
    assert d.read_block(100) == b"x" * 10
    assert dev.log[-1][1] & 0x02 == 0  # no SILI


def test_locate_falls_back_to_locate10_then_position_short_form(dev):
    dev.supports_locate16 = False
    dev.supports_long_position = False
    d = ScsiTapeDrive(dev)
    d.load()
    dev.objects = [b"1", b"2", FM, b"3"]
    d.locate(3)
    assert 0x2B in opcodes(dev)
    assert d.read_position() == Position(3, None)  # short form: no file number
    d.locate(1)
    assert opcodes(dev).count(0x92) == 1  # LOCATE(16) tried once, never again


def test_locate_beyond_eod(dev, drive):
    dev.objects = [b"1"]
    with pytest.raises(BlankCheckError):
        drive.locate(5)


def test_space_blocks_stops_after_filemark_with_residual(dev, drive):
    dev.objects = [b"1", b"2", FM, b"3", b"4"]
    with pytest.raises(FilemarkDetected) as e:
        drive.space(5)
    assert e.value.residual == 3
    assert drive.read_position() == Position(3, 1)
    with pytest.raises(FilemarkDetected) as e:
        drive.space(-2)  # backwards: stops on the BOP side of the filemark
    assert e.value.residual == 2 and drive.read_position() == Position(3, 1)
    drive.space(1)
    with pytest.raises(BlankCheckError) as b:
        drive.space(4)
    assert b.value.residual == 3


def test_space_filemarks_eod_and_bom(dev, drive):
    dev.objects = [b"1", FM, b"2", FM, b"3"]
    drive.space(2, SpaceUnit.FILEMARKS)
    assert drive.read_position() == Position(4, 2)
    drive.space(-1, SpaceUnit.FILEMARKS)
    assert drive.read_position() == Position(3, 1)
    drive.space(0, SpaceUnit.END_OF_DATA)
    assert drive.read_position() == Position(5, 2)
    with pytest.raises(BeginningOfMediumError) as e:
        drive.space(-9, SpaceUnit.FILEMARKS)
    assert e.value.residual == 7


def test_early_warning_then_volume_overflow(dev, drive):
    dev.early_warning_at = 2
    dev.physical_end_at = 4
    assert drive.write_block(b"x") is False
    assert drive.write_block(b"x") is False
    assert drive.write_block(b"x") is True  # 00/02 with EOM: written, nearly full
    assert drive.status().early_warning
    assert drive.write_block(b"x") is True
    with pytest.raises(EndOfMediumError) as e:
        drive.write_block(b"y" * 7)
    assert e.value.residual == 7 and e.value.error_class is ErrorClass.END_OF_MEDIUM
    assert len(dev.objects) == 4


def test_medium_error_with_media_alerts_is_media(dev, drive):
    dev.objects = [b"1", b"2"]
    dev.medium_error_at = {1}
    dev.alerts = {4, 5}
    drive.read_block(10)
    with pytest.raises(MediaError) as e:
        drive.read_block(10)
    assert e.value.alerts == frozenset({4, 5})
    assert drive.alerts() == frozenset({4, 5})  # kept for the caller although the read cleared them
    assert drive.alerts() == frozenset()


def test_medium_error_with_drive_alerts_is_drive(dev, drive):
    dev.objects = [b"1"]
    dev.medium_error_at = {0}
    dev.alerts = {30}
    with pytest.raises(DriveError) as e:
        drive.read_block(10)
    assert e.value.error_class is ErrorClass.DRIVE and 30 in e.value.alerts


def test_deferred_write_error(dev, drive):
    dev.deferred_error = True
    with pytest.raises(MediaError, match="deferred"):
        drive.write_block(b"x")


def test_unit_attention_is_retried_for_status_but_not_for_io(dev, drive):
    dev.unit_attentions = [(0x29, 0x00)]
    assert drive.status().ready
    dev.objects = [b"1"]
    drive.rewind()
    dev.unit_attentions = [(0x28, 0x00)]
    with pytest.raises(RecoverableError, match="position is lost"):
        drive.read_block(10)


def test_remaining_capacity_and_alerts_from_log_pages(dev, drive):
    assert drive.remaining_capacity() == 12_000_000 * 1024 * 1024
    dev.alerts = {21}
    assert drive.needs_cleaning()
    assert drive.alerts() == frozenset({21})


def test_statistics_per_mount(dev, drive):
    for _ in range(4):
        drive.write_block(b"z" * 1000)
    drive.write_filemarks(1)
    stats = drive.statistics()
    assert stats["bytes_written"] == 4000 and stats["records_written"] == 4
    assert stats["filemarks_written"] == 1
    assert stats["write_total_corrected"] == 4  # counter delta over this mount
    assert stats["tape_bytes_from_host"] == 4000 and stats["compression_ratio"] == 2.0
    assert stats["mount_seconds"] >= 0
    assert stats["volume_mounts"] == 42  # page 17h, the cartridge's lifetime count


def test_fixed_block_mode(dev, drive):
    drive.set_block_size(512)
    assert dev.block_length == 512
    drive.write_block(b"a" * 1024)  # two fixed blocks
    assert dev.objects == [b"a" * 512, b"a" * 512]
    drive.rewind()
    assert drive.read_block(512) == b"a" * 512
    assert dev.log[-1][1] & 0x01  # FIXED bit
    with pytest.raises(ValueError):
        drive.write_block(b"a" * 100)
    drive.set_block_size(0)
    assert drive.status().block_size == 0


def test_compression_switch(dev, drive):
    assert drive.set_compression(True) is True


def test_block_limits(dev, drive):
    assert drive.block_limits() == (0, 8 << 20, 1)


def test_cleaning_cycle(dev):
    dev.cleaning_cartridge = True
    d = ScsiTapeDrive(dev)
    d.poll_interval = 0.001
    result = d.clean(timeout=5)
    assert result.cleaned and not result.expired
    assert not dev.objects  # nothing written to the cleaning cartridge


def test_expired_cleaning_cartridge(dev):
    dev.cleaning_cartridge = True
    dev.cleaning_expired = True
    d = ScsiTapeDrive(dev)
    d.poll_interval = 0.001
    result = d.clean(timeout=5)
    assert result.expired and not result.cleaned and 22 in result.alerts


def test_loading_a_cleaning_cartridge_as_data(dev):
    dev.cleaning_cartridge = True
    dev.cleaning_turs = 1000
    d = ScsiTapeDrive(dev, ready_timeout=0.2)
    d.poll_interval = 0.001
    with pytest.raises(CleaningCartridgeError):
        d.load()


def test_canned_read_position_replies_make_the_driver_track_the_position(dev):
    dev.constant_position = True
    d = ScsiTapeDrive(dev)
    d.load()
    d.write_block(b"1")
    d.write_filemarks(1)
    assert d.read_position() == Position(2, 1)  # tracked, not the device's "object 0"
    assert d._read_position_form is None
