"""Sense data decoding: fixed and descriptor formats, from SPC-4 layouts and from bytes
recorded from tgt 1.0.85."""

from __future__ import annotations

import pytest

from drivers.scsi.sense import (
    Sense,
    SenseFormatError,
    SenseKey,
    build_fixed_sense,
    parse_sense,
)

# Recorded from tgt 1.0.85 over iSCSI (the raw sense libiscsi leaves in task->datain).
TGT_TUR_NO_MEDIUM = bytes.fromhex("700002000000000a000000003a0000000000")
TGT_READ_LONGER_RECORD = bytes.fromhex("f00020ffffffce0a00000000000000000000")  # 50 of 100
TGT_READ_SHORTER_RECORD = bytes.fromhex("f00020000000c80a00000000000000000000")  # 300 of 100
TGT_READ_FILEMARK = bytes.fromhex("f00080000010000a00000000000100000000")
TGT_READ_EOD = bytes.fromhex("700048000000000a00000000000000000000")
TGT_SPACE_EOD = bytes.fromhex("700000000000000a00000000000500000000")
TGT_NO_LOG_SENSE = bytes.fromhex("700005000000000a00000000200000000000")
TGT_MODE_PAGE_REFUSED = bytes.fromhex("700005000000000a00000000260000000000")
TGT_REMOVAL_PREVENTED = bytes.fromhex("700005000000000a00000000530200000000")
TGT_DESTINATION_FULL = bytes.fromhex("700005000000000a000000003b0d00000000")


def test_tgt_not_ready_no_medium():
    s = parse_sense(TGT_TUR_NO_MEDIUM)
    assert s.key is SenseKey.NOT_READY
    assert s.asc_ascq == (0x3A, 0x00)
    assert s.information is None
    assert not (s.filemark or s.eom or s.ili)
    assert "medium not present" in str(s)


def test_tgt_ili_longer_record_has_negative_residual():
    s = parse_sense(TGT_READ_LONGER_RECORD)
    assert s.key is SenseKey.NO_SENSE
    assert s.ili and not s.filemark and not s.eom
    assert s.information == -50


def test_tgt_ili_shorter_record_has_positive_residual():
    s = parse_sense(TGT_READ_SHORTER_RECORD)
    assert s.ili
    assert s.information == 200


def test_tgt_filemark():
    s = parse_sense(TGT_READ_FILEMARK)
    assert s.filemark and s.key is SenseKey.NO_SENSE
    assert s.asc_ascq == (0x00, 0x01)
    assert s.information == 4096  # the whole request was not transferred


def test_tgt_eod_is_blank_check_with_eom_and_no_ascq():
    s = parse_sense(TGT_READ_EOD)
    assert s.key is SenseKey.BLANK_CHECK
    assert s.eom
    assert s.asc_ascq == (0, 0)  # real drives: 00/05


def test_tgt_space_into_eod_is_no_sense_00_05():
    s = parse_sense(TGT_SPACE_EOD)
    assert s.key is SenseKey.NO_SENSE and s.asc_ascq == (0, 5)


@pytest.mark.parametrize(
    ("raw", "asc"),
    [
        (TGT_NO_LOG_SENSE, (0x20, 0x00)),
        (TGT_MODE_PAGE_REFUSED, (0x26, 0x00)),
        (TGT_REMOVAL_PREVENTED, (0x53, 0x02)),
        (TGT_DESTINATION_FULL, (0x3B, 0x0D)),
    ],
)
def test_tgt_illegal_requests(raw, asc):
    s = parse_sense(raw)
    assert s.key is SenseKey.ILLEGAL_REQUEST
    assert s.asc_ascq == asc


def test_fixed_volume_overflow_with_eom_and_info():
    # SSC-4: a WRITE at the physical end: VOLUME OVERFLOW, EOM, 00/02, INFO = bytes not written
    raw = bytes.fromhex("f0004d00040000 0a 00000000 0002 00 000000".replace(" ", ""))
    s = parse_sense(raw)
    assert s.key is SenseKey.VOLUME_OVERFLOW
    assert s.eom and not s.filemark
    assert s.asc_ascq == (0x00, 0x02)
    assert s.information == 0x40000


def test_fixed_deferred_error():
    raw = build_fixed_sense(SenseKey.MEDIUM_ERROR, 0x0C, 0x00, deferred=True)
    s = parse_sense(raw)
    assert s.deferred and s.response_code == 0x71
    assert s.key is SenseKey.MEDIUM_ERROR


def test_fixed_sense_key_specific_field_pointer():
    raw = bytearray(build_fixed_sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00))
    raw[15:18] = bytes([0xC0, 0x00, 0x01])  # SKSV, C/D = CDB, byte 1
    s = parse_sense(raw)
    assert s.field_pointer == 1
    assert s.sense_key_specific == bytes([0xC0, 0x00, 0x01])


def test_fixed_short_sense_without_asc():
    # Some devices return 8 bytes; the ASC is then unknown (zero).
    s = parse_sense(bytes.fromhex("7000020000000000"))
    assert s.key is SenseKey.NOT_READY and s.asc_ascq == (0, 0)


def test_fixed_information_invalid_is_none():
    raw = bytearray(TGT_READ_LONGER_RECORD)
    raw[0] &= 0x7F
    assert parse_sense(raw).information is None


def test_descriptor_format_with_information_and_stream_descriptors():
    raw = bytes.fromhex(
        "72 00 00 01 00 00 00 18"  # NO SENSE, 00/01, additional length 24
        "00 0a 80 00 ff ff ff ff ff ff ff 9c"  # information: VALID, -100
        "04 02 00 a0"  # stream commands: FILEMARK + ILI
        "02 06 00 00 c0 00 04 00"  # sense key specific, SKSV, field pointer 4
    )
    s = parse_sense(raw)
    assert s.descriptor_format and not s.deferred
    assert s.key is SenseKey.NO_SENSE
    assert s.asc_ascq == (0, 1)
    assert s.information == -100
    assert s.filemark and s.ili and not s.eom
    assert s.field_pointer == 4


def test_descriptor_format_deferred_volume_overflow_eom():
    raw = bytes.fromhex("73 0d 00 02 00 00 00 04 04 02 00 40")
    s = parse_sense(raw)
    assert s.deferred and s.key is SenseKey.VOLUME_OVERFLOW
    assert s.eom and s.information is None


def test_descriptor_ignores_unknown_and_truncated_descriptors():
    raw = bytes.fromhex("72 03 11 00 00 00 00 10 80 02 aa bb 00 0a 80 00 00 00")
    s = parse_sense(raw)
    assert s.key is SenseKey.MEDIUM_ERROR and s.asc_ascq == (0x11, 0)
    assert s.information is None  # the information descriptor is cut short


@pytest.mark.parametrize("raw", [b"", b"\x70", bytes.fromhex("7f00000000000000"), b"\x00" * 18])
def test_rejects_what_is_not_sense(raw):
    with pytest.raises(SenseFormatError):
        parse_sense(raw)


def test_build_fixed_sense_round_trips():
    raw = build_fixed_sense(SenseKey.BLANK_CHECK, 0, 5, eom=True, information=7)
    s = parse_sense(raw)
    assert (s.key, s.asc, s.ascq, s.eom, s.information) == (SenseKey.BLANK_CHECK, 0, 5, True, 7)
    assert isinstance(s, Sense)
    assert "end-of-data detected" in s.describe()
