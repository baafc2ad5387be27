"""ANSI X3.27 labels: layout, round trips, precise rejection, and the AUL tape sequence."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from drivers.formats import ansi
from drivers.formats.ansi import (
    FileLabel1,
    FileLabel2,
    LabelError,
    Vol1,
    check_trailer,
    decode_date,
    encode_date,
    parse_label,
    read_header,
    read_trailer,
    read_vol1,
    write_header,
    write_trailer,
    write_vol1,
)
from drivers.formats.foreign import Format, open_tape_file
from drivers.formats.pax import MemberInfo, TapeFileWriter, iter_members
from drivers.tape import BlankCheckError
from tests.formats.memdrive import MemDrive
from tests.formats.util import write_tape_file

DAY = dt.date(2024, 12, 31)


def pos(label: bytes, start: int, end: int) -> bytes:
    """Character positions start..end, 1-based inclusive, as the standard numbers them."""
    return label[start - 1 : end]


def test_vol1_layout_and_round_trip():
    raw = Vol1("A00001", owner="PHYSICS").to_bytes()
    assert len(raw) == 80
    assert pos(raw, 1, 4) == b"VOL1"
    assert pos(raw, 5, 10) == b"A00001"
    assert pos(raw, 11, 11) == b" "
    assert pos(raw, 25, 37) == b"REELFS       "
    assert pos(raw, 38, 51) == b"PHYSICS       "
    assert pos(raw, 80, 80) == b"4"
    assert Vol1.parse(raw) == Vol1("A00001", owner="PHYSICS")
    assert parse_label(raw) == Vol1("A00001", owner="PHYSICS")
    assert Vol1.parse(Vol1("AB1").to_bytes()).volser == "AB1"


def test_hdr1_and_eof1_layout_and_round_trip():
    hdr = FileLabel1(
        kind="HDR",
        file_id="B000000000000001",
        file_set="A00001",
        file_sequence=12345,
        created=DAY,
        expires=None,
    )
    raw = hdr.to_bytes()
    assert len(raw) == 80
    assert pos(raw, 1, 4) == b"HDR1"
    assert pos(raw, 5, 21) == b"B000000000000001 "
    assert pos(raw, 22, 27) == b"A00001"
    assert pos(raw, 28, 31) == b"0001"
    assert pos(raw, 32, 35) == b"2345"  # modulo 10,000
    assert pos(raw, 36, 41) == b"000100"
    assert pos(raw, 42, 47) == b"024366"
    assert pos(raw, 48, 53) == b"000000"
    assert pos(raw, 55, 60) == b"000000"
    assert pos(raw, 61, 73) == b"REELFS       "
    parsed = FileLabel1.parse(raw)
    assert parsed.file_sequence == 2345 and parsed.created == DAY and parsed.expires is None

    eof = FileLabel1(kind="EOF", file_id="F", file_set="A00001", block_count=1_234_567)
    raw = eof.to_bytes()
    assert pos(raw, 1, 4) == b"EOF1" and pos(raw, 55, 60) == b"234567"
    assert FileLabel1.parse(raw, "EOF").block_count == 234_567


@pytest.mark.parametrize(
    "day,text",
    [
        (dt.date(1999, 1, 1), b" 99001"),
        (dt.date(2000, 2, 29), b"000060"),
        (dt.date(2024, 12, 31), b"024366"),
        (dt.date(2100, 3, 1), b"100060"),
        (None, b"000000"),
    ],
)
def test_cyyddd_dates(day, text):
    assert encode_date(day) == text
    assert decode_date(text.decode(), "HDR1", "creation date", "42-47") == day


def test_hdr2_small_and_large_block_lengths():
    small = FileLabel2(kind="HDR", block_length=32768).to_bytes()
    assert pos(small, 1, 5) == b"HDR2F"
    assert pos(small, 6, 10) == b"32768" and pos(small, 11, 15) == b"32768"
    assert pos(small, 51, 52) == b"00"
    assert FileLabel2.parse(small) == FileLabel2(kind="HDR", block_length=32768)

    large = FileLabel2(kind="HDR", block_length=262144).to_bytes()
    assert pos(large, 6, 10) == b"00000"  # too big for the standard's field, as CTA writes
    assert pos(large, 18, 27) == b"0000262144"
    assert FileLabel2.parse(large).block_length == 262144

    eof = FileLabel2(kind="EOF", block_length=262144, block_count=12_345_678).to_bytes()
    assert pos(eof, 1, 4) == b"EOF2" and pos(eof, 28, 39) == b"000012345678"
    assert FileLabel2.parse(eof).block_count == 12_345_678


def test_a_cta_style_hdr2_without_reelfs_fields_parses():
    # density, reserved, recording technique "P ", reserved, AUL "00", reserved
    raw = b"HDR2F3276832768" + b" " + b" " * 18 + b"P " + b" " * 14 + b"00" + b" " * 28
    assert len(raw) == 80
    assert FileLabel2.parse(raw).block_length == 32768


def corrupt(raw: bytes, start: int, value: bytes) -> bytes:
    return raw[: start - 1] + value + raw[start - 1 + len(value) :]


HDR1 = FileLabel1(kind="HDR", file_id="F1", file_set="A00001", created=DAY).to_bytes()
VOL1 = Vol1("A00001").to_bytes()
HDR2 = FileLabel2(kind="HDR", block_length=262144).to_bytes()


@pytest.mark.parametrize(
    "raw,message",
    [
        (VOL1[:79], r"a 79-byte record where an 80-byte VOL1 label"),
        (VOL1 + b" ", r"81-byte record"),
        (corrupt(VOL1, 1, b"VOL2"), r"label identifier \(positions 1-4\) is 'VOL2'"),
        (corrupt(VOL1, 5, b"      "), r"volume identifier \(positions 5-10\) is blank"),
        (corrupt(VOL1, 5, b"ab"), r"volume identifier \(positions 5-10\) is 'ab0001'"),
        (corrupt(VOL1, 80, b"X"), r"label standard version \(position 80\) is 'X'"),
        (corrupt(VOL1, 20, b"\x07"), r"control character 0x07 at position 20"),
        (corrupt(VOL1, 30, b"\xe9"), r"non-ASCII byte 0xe9 at position 30"),
        ("VOL1".encode("cp500") + b"\x40" * 76, r"EBCDIC VOL1 label"),
        (corrupt(HDR1, 28, b"00a1"), r"HDR1 file section number \(positions 28-31\) is '00a1'"),
        (corrupt(HDR1, 42, b"023366"), r"creation date \(positions 42-47\).*day 366 of 2023"),
        (corrupt(HDR1, 42, b"x23001"), r"creation date \(positions 42-47\) is 'x23001'"),
        (corrupt(HDR1, 55, b"000007"), r"HDR1 block count \(positions 55-60\) is 7"),
        (corrupt(HDR2, 5, b"X"), r"HDR2 record format \(position 5\) is 'X'"),
        (corrupt(HDR2, 6, b"00001"), r"disagrees with the reelfs block length"),
        (corrupt(corrupt(HDR2, 6, b"00000"), 18, b" " * 10), r"block length .* is 0"),
    ],
)
def test_malformed_labels_are_rejected_precisely(raw, message):
    with pytest.raises(LabelError, match=message):
        parse_label(raw)


def test_parsers_insist_on_the_expected_kind():
    eof1 = FileLabel1(kind="EOF", file_id="F", file_set="A").to_bytes()
    with pytest.raises(LabelError, match=r"is 'EOF1', expected HDR1"):
        FileLabel1.parse(eof1, "HDR")
    with pytest.raises(LabelError, match=r"expected VOL1"):
        Vol1.parse(HDR1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Vol1("A000001").to_bytes(),  # 7 characters
        lambda: Vol1("a00001").to_bytes(),  # lower case is not an a-character
        lambda: Vol1("").to_bytes(),
        lambda: Vol1("A0 1").to_bytes(),
        lambda: FileLabel1(kind="HDR", file_id="x" * 18, file_set="A").to_bytes(),
        lambda: FileLabel1(kind="HDR", file_id="F", file_set="A", block_count=1).to_bytes(),
        lambda: FileLabel1(kind="XYZ", file_id="F", file_set="A").to_bytes(),
        lambda: FileLabel2(kind="HDR", block_length=0).to_bytes(),
        lambda: FileLabel2(kind="HDR", block_length=512, record_format="Q").to_bytes(),
        lambda: encode_date(dt.date(1850, 1, 1)),
    ],
)
def test_builders_refuse_what_cannot_be_encoded(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("fixed", [False, True])
def test_the_labelled_tape_sequence(fixed):
    drive = MemDrive()
    if fixed:
        drive.set_block_size(4096)  # as the mover mounts: labels switch to variable and back
    write_vol1(drive, "A00001", owner="REELFS")
    bs = 4096
    counts = []
    for seq, names in ((1, ["a", "b"]), (2, ["c"])):
        write_header(drive, volser="A00001", file_id=f"F{seq}", file_sequence=seq, block_size=bs)
        writer = TapeFileWriter(drive, bs)
        for n in names:
            writer.add(MemberInfo(n, 5000, 0, 0o644), io.BytesIO(n.encode() * 5000))
        counts.append(writer.finish())
        write_trailer(
            drive,
            volser="A00001",
            file_id=f"F{seq}",
            file_sequence=seq,
            block_size=bs,
            block_count=counts[-1],
        )

    assert drive.block_size == (4096 if fixed else 0)
    # VOL1 HDR1 HDR2 FM | data FM | EOF1 EOF2 FM | HDR1 HDR2 FM | data FM | EOF1 EOF2 FM
    assert [len(drive.tape_file(i)) for i in range(7)] == [3, counts[0], 2, 2, counts[1], 2, 0]
    assert drive.syncs >= 4  # VOL1, the data filemarks, the trailers

    assert read_vol1(drive) == Vol1("A00001", owner="REELFS")
    for seq, names in ((1, ["a", "b"]), (2, ["c"])):
        header = read_header(drive)
        assert header.label1.file_id == f"F{seq}" and header.label2.block_length == bs
        got = [m.name for m, _, _ in iter_members(drive, header.label2.block_length)]
        assert got == names
        trailer = read_trailer(drive)
        check_trailer(header, trailer, counts[seq - 1])
        with pytest.raises(LabelError, match="block count"):
            check_trailer(header, trailer, counts[seq - 1] + 1)
    with pytest.raises(BlankCheckError):
        drive.read_block(80)

    # data file k is tape file 3k-2
    drive.locate(drive.file_start(4))
    assert [m.name for m, _, _ in iter_members(drive, bs)] == ["c"]
    drive.rewind()
    fmt, _ = open_tape_file(drive)
    assert fmt == Format.ANSI_LABEL


def test_read_vol1_on_unlabelled_and_blank_tapes():
    drive = MemDrive()
    write_tape_file(drive, 4096, [(MemberInfo("a", 1, 0, 0o644), b"a")])
    with pytest.raises(LabelError, match="4096-byte record where the VOL1 label"):
        read_vol1(drive)
    with pytest.raises(BlankCheckError):
        read_vol1(MemDrive())
    drive = MemDrive()
    drive.write_filemarks(1)
    with pytest.raises(LabelError, match="filemark at BOT"):
        read_vol1(drive)


def test_reads_a_cta_style_header_group_with_user_labels():
    drive = MemDrive()
    cta_vol1 = corrupt(corrupt(Vol1("V12345").to_bytes(), 80, b"3"), 38, b"stage  ")
    drive.write_block(cta_vol1)
    drive.write_block(HDR1)
    drive.write_block(HDR2)
    drive.write_block(b"UHL1" + b" " * 76)
    drive.write_filemarks(1)
    vol = read_vol1(drive)
    assert (vol.volser, vol.label_standard, vol.owner) == ("V12345", "3", "stage")
    header = read_header(drive)
    assert header.others == (b"UHL1" + b" " * 76,)
    assert drive.read_position().file == 1


def test_a_missing_hdr2_is_reported():
    drive = MemDrive()
    drive.write_block(HDR1)
    drive.write_filemarks(1)
    drive.rewind()
    with pytest.raises(LabelError, match="filemark where the HDR2 label was expected"):
        ansi.read_header(drive)
