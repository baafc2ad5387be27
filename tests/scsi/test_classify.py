"""Every sense outcome lands in one of the archive's error classes, TapeAlert flags tell a
media failure from a drive failure, and the table of 64 flags is complete."""

from __future__ import annotations

import pytest

from drivers.scsi import tapealert
from drivers.scsi.classify import classify, error_for, wants_alerts
from drivers.scsi.sense import SenseKey, build_fixed_sense, parse_sense
from drivers.tape import (
    BlankCheckError,
    DriveError,
    EndOfMediumError,
    ErrorClass,
    IllegalRequestError,
    MediaError,
    NotReadyError,
    RecoverableError,
)


def sense(key, asc=0, ascq=0, **kw):
    return parse_sense(build_fixed_sense(key, asc, ascq, **kw))


@pytest.mark.parametrize(
    ("key", "asc", "ascq", "expected"),
    [
        (SenseKey.MEDIUM_ERROR, 0x11, 0x00, ErrorClass.MEDIA),  # unrecovered read error
        (SenseKey.MEDIUM_ERROR, 0x0C, 0x00, ErrorClass.MEDIA),  # write error
        (SenseKey.MEDIUM_ERROR, 0x31, 0x00, ErrorClass.MEDIA),  # medium format corrupted
        (SenseKey.HARDWARE_ERROR, 0x44, 0x00, ErrorClass.DRIVE),
        (SenseKey.HARDWARE_ERROR, 0x15, 0x01, ErrorClass.DRIVE),  # mechanical positioning
        (SenseKey.HARDWARE_ERROR, 0x52, 0x00, ErrorClass.MEDIA),  # cartridge fault
        (SenseKey.NOT_READY, 0x3A, 0x00, ErrorClass.NOT_READY),
        (SenseKey.NOT_READY, 0x04, 0x01, ErrorClass.NOT_READY),
        (SenseKey.NOT_READY, 0x04, 0x03, ErrorClass.DRIVE),  # manual intervention
        (SenseKey.NOT_READY, 0x30, 0x00, ErrorClass.MEDIA),  # incompatible medium
        (SenseKey.NOT_READY, 0x30, 0x03, ErrorClass.MEDIA),  # cleaning cartridge installed
        (SenseKey.BLANK_CHECK, 0x00, 0x05, ErrorClass.BLANK),
        (SenseKey.BLANK_CHECK, 0x00, 0x00, ErrorClass.BLANK),  # tgt's EOD
        (SenseKey.BLANK_CHECK, 0x14, 0x03, ErrorClass.MEDIA),  # EOD not found: damaged tape
        (SenseKey.VOLUME_OVERFLOW, 0x00, 0x02, ErrorClass.END_OF_MEDIUM),
        (SenseKey.ILLEGAL_REQUEST, 0x20, 0x00, ErrorClass.ILLEGAL_REQUEST),
        (SenseKey.ILLEGAL_REQUEST, 0x53, 0x02, ErrorClass.ILLEGAL_REQUEST),
        (SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D, ErrorClass.ILLEGAL_REQUEST),
        (SenseKey.UNIT_ATTENTION, 0x28, 0x00, ErrorClass.RECOVERABLE),
        (SenseKey.UNIT_ATTENTION, 0x29, 0x00, ErrorClass.RECOVERABLE),
        (SenseKey.RECOVERED_ERROR, 0x17, 0x01, ErrorClass.RECOVERABLE),
        (SenseKey.RECOVERED_ERROR, 0x5D, 0x00, ErrorClass.RECOVERABLE),
        (SenseKey.ABORTED_COMMAND, 0x47, 0x00, ErrorClass.RECOVERABLE),
        (SenseKey.DATA_PROTECT, 0x27, 0x00, ErrorClass.DATA_PROTECT),  # write-protected cartridge
        (SenseKey.DATA_PROTECT, 0x30, 0x0C, ErrorClass.MEDIA),  # WORM overwrite
        (SenseKey.MISCOMPARE, 0x1D, 0x00, ErrorClass.MEDIA),
        (SenseKey.VENDOR_SPECIFIC, 0x00, 0x00, ErrorClass.DRIVE),
        (SenseKey.NOT_READY, 0x3B, 0x12, ErrorClass.NOT_READY),  # magazine removed
        (SenseKey.MEDIUM_ERROR, 0x82, 0x82, ErrorClass.DRIVE),  # drive requires cleaning
    ],
)
def test_class_by_sense(key, asc, ascq, expected):
    assert classify(sense(key, asc, ascq)) is expected


def test_no_sense_at_all_blames_the_drive():
    assert classify(None) is ErrorClass.DRIVE


def test_every_key_has_a_class():
    for key in SenseKey:
        assert classify(sense(key, 0x00, 0x00)) in set(ErrorClass)


def test_medium_error_with_drive_alerts_is_a_drive_failure():
    s = sense(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
    assert classify(s, {30}) is ErrorClass.DRIVE  # hardware A
    assert classify(s, {20}) is ErrorClass.DRIVE  # clean now
    assert classify(s, {5, 31}) is ErrorClass.DRIVE  # read failure (either) + hardware B


def test_hardware_error_with_media_alerts_is_a_media_failure():
    s = sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00)
    assert classify(s, {4}) is ErrorClass.MEDIA  # "media"
    assert classify(s, {14, 3}) is ErrorClass.MEDIA  # cartridge failure + hard error


def test_mixed_or_informational_alerts_leave_the_sense_verdict():
    assert classify(sense(SenseKey.MEDIUM_ERROR, 0x11, 0), {4, 30}) is ErrorClass.MEDIA
    assert classify(sense(SenseKey.HARDWARE_ERROR, 0x44, 0), {4, 30}) is ErrorClass.DRIVE
    assert classify(sense(SenseKey.MEDIUM_ERROR, 0x11, 0), {19, 10}) is ErrorClass.MEDIA


def test_alerts_never_turn_other_classes_into_media_or_drive():
    assert classify(sense(SenseKey.NOT_READY, 0x3A, 0), {30}) is ErrorClass.NOT_READY
    assert classify(sense(SenseKey.BLANK_CHECK, 0, 5), {4}) is ErrorClass.BLANK


@pytest.mark.parametrize(
    ("s", "exc"),
    [
        (sense(SenseKey.MEDIUM_ERROR, 0x11, 0, information=3), MediaError),
        (sense(SenseKey.HARDWARE_ERROR, 0x44, 0), DriveError),
        (sense(SenseKey.NOT_READY, 0x3A, 0), NotReadyError),
        (sense(SenseKey.VOLUME_OVERFLOW, 0, 2, eom=True, information=65536), EndOfMediumError),
        (sense(SenseKey.BLANK_CHECK, 0, 5, eom=True), BlankCheckError),
        (sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0), IllegalRequestError),
        (sense(SenseKey.UNIT_ATTENTION, 0x29, 0), RecoverableError),
    ],
)
def test_error_for_builds_the_right_exception(s, exc):
    e = error_for("op", s)
    assert type(e) is exc
    assert e.sense == s.raw
    assert e.residual == s.information
    assert str(e).startswith("op: ")


def test_error_for_carries_alerts_and_names_them():
    e = error_for("read", sense(SenseKey.MEDIUM_ERROR, 0x11, 0), alerts={31})
    assert isinstance(e, DriveError) and e.alerts == frozenset({31})
    assert "hardware B" in str(e)


def test_wants_alerts_only_for_medium_and_hardware_errors():
    assert wants_alerts(sense(SenseKey.MEDIUM_ERROR, 0x11, 0))
    assert wants_alerts(sense(SenseKey.HARDWARE_ERROR, 0x44, 0))
    assert not wants_alerts(sense(SenseKey.NOT_READY, 0x3A, 0))
    assert not wants_alerts(None)


# -- the TapeAlert table ------------------------------------------------------------------


def test_tapealert_table_has_all_64_flags():
    assert sorted(tapealert.FLAGS) == list(range(1, 65))
    for n, f in tapealert.FLAGS.items():
        assert f.number == n and f.name
        assert f.severity in set(tapealert.Severity)
        assert f.blame in set(tapealert.Blame)


@pytest.mark.parametrize(
    ("flag", "blame", "severity"),
    [
        (4, tapealert.Blame.MEDIA, tapealert.Severity.CRITICAL),
        (5, tapealert.Blame.EITHER, tapealert.Severity.CRITICAL),
        (9, tapealert.Blame.MEDIA, tapealert.Severity.CRITICAL),
        (20, tapealert.Blame.CLEANING, tapealert.Severity.CRITICAL),
        (21, tapealert.Blame.CLEANING, tapealert.Severity.WARNING),
        (22, tapealert.Blame.MEDIA, tapealert.Severity.CRITICAL),
        (30, tapealert.Blame.DRIVE, tapealert.Severity.CRITICAL),
        (31, tapealert.Blame.DRIVE, tapealert.Severity.CRITICAL),
        (49, tapealert.Blame.MEDIA, tapealert.Severity.INFORMATION),
        (56, tapealert.Blame.DRIVE, tapealert.Severity.CRITICAL),
    ],
)
def test_tapealert_flags(flag, blame, severity):
    f = tapealert.FLAGS[flag]
    assert (f.blame, f.severity) == (blame, severity)


def test_tapealert_blame_and_describe():
    assert tapealert.blame([]) is None
    assert tapealert.blame([19]) is None  # informational only
    assert tapealert.blame([4, 7]) is tapealert.Blame.MEDIA
    assert tapealert.blame([30, 21]) is tapealert.Blame.DRIVE
    assert tapealert.blame([4, 30]) is tapealert.Blame.EITHER
    assert tapealert.blame([5]) is tapealert.Blame.EITHER
    assert frozenset({20, 21}) == tapealert.CLEANING_FLAGS
    assert tapealert.describe([31, 4]) == "4 media (C, media); 31 hardware B (C, drive)"
