"""LOG SENSE pages, READ POSITION data and MODE SENSE data, from the standards' byte layouts
(what an LTO drive returns) and from bytes recorded from tgt 1.0.85."""

from __future__ import annotations

import pytest

from drivers.scsi import logpages, modepages, position

# -- LOG SENSE ----------------------------------------------------------------------------


def tapealert_page(flags: set[int]) -> bytes:
    """Page 2Eh as drives send it: 64 one-byte parameters, control byte 03h."""
    body = b"".join(
        n.to_bytes(2, "big") + bytes([0x03, 1, 1 if n in flags else 0]) for n in range(1, 65)
    )
    return bytes([0x2E, 0]) + len(body).to_bytes(2, "big") + body


def test_tapealert_page():
    page = tapealert_page({3, 20, 64})
    assert len(page) == 4 + 64 * 5
    assert logpages.tape_alerts(page) == frozenset({3, 20, 64})
    assert logpages.tape_alerts(tapealert_page(set())) == frozenset()


def test_tapealert_page_ignores_other_bits_and_codes():
    page = logpages.build_page(0x2E, [(1, b"\x02"), (2, b"\x01"), (0x41, b"\x01"), (5, b"")])
    assert logpages.tape_alerts(page) == frozenset({2})


def test_wrong_page_is_rejected():
    with pytest.raises(logpages.LogPageError):
        logpages.tape_alerts(logpages.build_page(0x31, []))
    with pytest.raises(logpages.LogPageError):
        logpages.parse_page(b"\x2e\x00")


def test_tape_capacity_page_in_mib():
    # LTO-5: main partition remaining 121187 MiB, maximum 121229 MiB
    raw = bytes.fromhex(
        "31 00 00 20"
        "00 01 00 04 00 01 d9 63"
        "00 02 00 04 00 00 00 00"
        "00 03 00 04 00 01 d9 8d"
        "00 04 00 04 00 00 00 00"
    )
    cap = logpages.tape_capacity(raw)
    assert cap.remaining == 121187 * 1024 * 1024
    assert cap.maximum == 121229 * 1024 * 1024
    assert cap.remaining_alternate == 0


def test_error_counter_pages():
    params = [(0, b"\x00\x05"), (1, b"\x00\x00\x00\x02"), (2, b"\x07"), (3, b"\x07"),
              (4, b"\x09"), (5, (1 << 40).to_bytes(8, "big")), (6, b"\x00\x01"),
              (0x8000, b"\x01")]  # fmt: skip
    w = logpages.error_counters(logpages.build_page(0x02, params), logpages.WRITE_ERRORS)
    assert w == {
        "corrected_without_delay": 5,
        "corrected_with_delay": 2,
        "total_retries": 7,
        "total_corrected": 7,
        "correction_algorithm_runs": 9,
        "bytes_processed": 1 << 40,
        "total_uncorrected": 1,
    }
    r = logpages.error_counters(logpages.build_page(0x03, params[:1]), logpages.READ_ERRORS)
    assert r == {"corrected_without_delay": 5}


def test_sequential_access_page():
    raw = logpages.build_page(
        0x0C,
        [(0, (3 << 30).to_bytes(8, "big")), (1, (1 << 30).to_bytes(8, "big")),
         (4, (5000).to_bytes(4, "big")), (5, (1_400_000).to_bytes(4, "big")),
         (0x100, b"\x00\x00\x00\x01")],
    )  # fmt: skip
    sa = logpages.sequential_access(raw)
    assert sa["bytes_from_host"] == 3 << 30 and sa["bytes_to_medium"] == 1 << 30
    assert sa["native_capacity_bop_to_eod_mb"] == 5000
    assert sa["native_capacity_bop_to_ew_mb"] == 1_400_000
    assert sa["cleaning_required"] == 1


@pytest.mark.parametrize("page", [0x1B, 0x32])
def test_data_compression_pages(page):
    raw = logpages.build_page(
        page,
        [(0, b"\x00\x64"), (1, b"\x00\xfa"), (6, b"\x00\x00\x00\x02"), (7, b"\x00\x00\x00\x10"),
         (8, b"\x00\x00\x00\x01"), (9, b"\x00\x00\x00\x20")],
    )  # fmt: skip
    dc = logpages.data_compression(raw)
    assert dc["read_compression_ratio"] == 1.0
    assert dc["write_compression_ratio"] == 2.5
    assert dc["bytes_from_host"] == 2_000_016
    assert dc["bytes_to_medium"] == 1_000_032
    with pytest.raises(logpages.LogPageError):
        logpages.data_compression(logpages.build_page(0x02, []))


def test_volume_statistics_page():
    raw = logpages.build_page(0x17, [(1, b"\x00\x00\x00\x2a"), (3, b"\x04"), (0x202, b"\x01")])
    assert logpages.volume_statistics(raw) == {"volume_mounts": 42, "volume_write_retries": 4}


def test_supported_pages():
    raw = bytes.fromhex("00 00 00 07 00 02 03 0c 17 2e 31")
    assert logpages.supported_pages(raw) == {0, 2, 3, 0x0C, 0x17, 0x2E, 0x31}


def test_page_length_beyond_data_is_cut_at_the_data():
    raw = logpages.build_page(0x02, [(0, b"\x05"), (1, b"\x06")])
    page = logpages.parse_page(raw[:-3])
    assert [p.code for p in page.parameters] == [0]


# -- READ POSITION ------------------------------------------------------------------------


def test_short_form():
    raw = bytes.fromhex("81 00 0000 00000000 00000000 00 000000 00000000")  # BOP, BPEW
    p = position.parse_short(raw.replace(b" ", b""))
    assert p.block == 0 and p.bop and p.bpew and not p.eop
    raw = bytes.fromhex("00 01 0000 00001234 00001200 00 000010 00040000")
    p = position.parse_short(raw)
    assert (p.block, p.partition, p.blocks_in_buffer, p.bytes_in_buffer) == (0x1234, 1, 16, 262144)


def test_short_form_unknown_position_and_buffer():
    raw = bytes.fromhex("34 00 0000 00000000 00000000 00 000000 00000000")  # LOCU BYCU LOLU
    p = position.parse_short(raw)
    assert p.block is None and p.blocks_in_buffer is None and p.bytes_in_buffer is None


def test_long_form():
    raw = bytes.fromhex("40 000000 00000002 0000000100000005 0000000000000003 0000000000000000")
    p = position.parse_long(raw)
    assert (p.block, p.file, p.partition, p.eop) == ((1 << 32) + 5, 3, 2, True)
    unknown = position.parse_long(bytes.fromhex("0c") + bytes(31))
    assert unknown.block is None and unknown.file is None


def test_extended_form():
    raw = bytes.fromhex("00 00 001c 00 000003 0000000000000010 0000000000000012 00000000000c0000")
    p = position.parse_extended(raw)
    assert (p.block, p.blocks_in_buffer, p.bytes_in_buffer) == (16, 3, 0xC0000)


def test_forms_too_short():
    with pytest.raises(position.PositionFormatError):
        position.parse_short(bytes(19))
    with pytest.raises(position.PositionFormatError):
        position.parse_long(bytes(20))


def test_tgt_constant_replies_are_recognised():
    # recorded from tgt 1.0.85: the same bytes whatever the position
    short = bytes.fromhex("1400000000000000000000000000000000000000")
    long = bytes.fromhex("20" + "00" * 31)
    assert position.looks_constant(short) and position.looks_constant(long)
    assert position.parse_long(long).block == 0  # reads as "object 0": not to be trusted
    real = bytes.fromhex("00 00 0000 00000007 00000007 00 000000 00000000")
    assert not position.looks_constant(real)


# -- MODE SENSE / SELECT ------------------------------------------------------------------

TGT_MODE_SENSE_ALL = bytes.fromhex(
    "a100100800000000000000000000010a00080000000008000000020e8080000a000000000000000000000a0a"
    "020000000000000002004a01001c040000000000000000000000000000000000000000000000000000000f0e"
    "0000000000000000000000000000100e00000080800000000000000000001c0a08000000000000000000"
    "1d1e010000000000000000000000000000000000000000000000000000000000"
)


def test_parse_tgt_mode_sense_all_pages():
    md = modepages.parse_mode6(TGT_MODE_SENSE_ALL)
    assert md.buffered_mode == 1 and not md.write_protected
    assert md.block_length == 0 and md.density == 0
    assert md.compression_enabled is False and md.compression_capable is False
    assert {0x0F, 0x10, 0x1C} <= set(md.pages)
    assert md.pages[0x0F][:2] == b"\x0f\x0e"


def test_parse_mode_sense_fixed_blocks_write_protected():
    raw = bytes.fromhex("1b 00 90 08 58 000000 00 040000 0f 0e c0 80 00000001 00000001 00000000")
    md = modepages.parse_mode6(raw)
    assert md.write_protected and md.buffered_mode == 1
    assert (md.density, md.block_length) == (0x58, 262144)
    assert md.compression_enabled is True and md.compression_capable is True


def test_build_select_block_descriptor_and_page():
    page = bytes.fromhex("8f 0e 40 80 00000001 00000001 00000000")  # PS bit set by the drive
    raw = modepages.build_select6(
        density=0x58, block_length=512, pages=[modepages.with_compression(page, True)]
    )
    assert raw == bytes.fromhex(
        "00 00 10 08 58 000000 00 000200 0f 0e c0 80 00000001 00000001 00000000"
    )
    off = modepages.with_compression(page, False)
    assert off[2] == 0x40


def test_build_select_rejects_huge_blocks():
    with pytest.raises(ValueError):
        modepages.build_select6(density=0, block_length=1 << 24)
