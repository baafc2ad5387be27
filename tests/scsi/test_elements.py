"""READ ELEMENT STATUS decoding: with and without volume tags and device identifiers, from
SMC-3 layouts and from replies recorded from tgt 1.0.85 (8 bytes short, wrong "first
element address")."""

from __future__ import annotations

import pytest

from drivers.scsi.elements import (
    ElementStatus,
    ElementStatusError,
    SmcElementType,
    encode_page,
    encode_report,
    parse_element_status,
    report_length,
)
from drivers.scsi.library import LibraryMappingError, map_drives
from drivers.tape import ElementType

# Recorded from tgt 1.0.85 (VOLTAG=1; DVCID=1 for the drives).
TGT_TRANSPORT = bytes.fromhex(
    "01f500010000003c018000340000003400010000000000000000000020202020202020202020202020202020"
    "20202020202020202020202020202020"
)
TGT_SLOTS = bytes.fromhex(
    "03e8000600000140028000340000013803e8010000000000008001f4524c3030303120202020202020202020"
    "20202020202020202020202020202020000000000000000003e9010000000000008001f4524c303030322020"
    "202020202020202020202020202020202020202020202020000000000000000003ea01000000000000000000"
    "524c303030332020202020202020202020202020202020202020202020202020000000000000000003eb0100"
    "0000000000000000524c30303034202020202020202020202020202020202020202020202020202000000000"
    "0000000003ec01000000000000000000524c3030303520202020202020202020202020202020202020202020"
    "20202020000000000000000003ed01000000000000000000434c4e3030312020202020202020202020202020"
    "202020202020202020202020"
)
TGT_MAILSLOTS = bytes.fromhex(
    "000a0002000000700380003400000068000a0000000000000000000020202020202020202020202020202020"
    "202020202020202020202020202020200000000000000000000b000000000000000000002020202020202020"
    "202020202020202020202020202020202020202020202020"
)
TGT_DRIVES_DVCID = bytes.fromhex(
    "01f40002000000b404800056000000ac01f40000000000000000000020202020202020202020202020202020"
    "2020202020202020202020202020202000000000020100225245454c4653202056544c2d4452495645202020"
    "2020202056544c4430303030300001f500000000000000000000202020202020202020202020202020202020"
    "202020202020202020202020202000000000020100225245454c4653202056544c2d44524956452020202020"
    "20205654"
)
TGT_SLOTS_NO_VOLTAG = bytes.fromhex(
    "03e8000600000068020000100000006003e8010000000000008001f40000000003e9010000000000008001f4"
    "0000000003ea010000000000000000000000000003eb010000000000000000000000000003ec010000000000"
    "000000000000000003ed010000000000"
)


def test_tgt_reply_is_eight_bytes_short():
    for reply in (TGT_TRANSPORT, TGT_SLOTS, TGT_MAILSLOTS, TGT_DRIVES_DVCID, TGT_SLOTS_NO_VOLTAG):
        assert report_length(reply) - len(reply) == 8


def test_tgt_transport_first_address_is_wrong_but_descriptor_is_right():
    assert int.from_bytes(TGT_TRANSPORT[:2], "big") == 501  # tgt's "first element address"
    (t,) = parse_element_status(TGT_TRANSPORT)
    assert t.type is SmcElementType.TRANSPORT and t.address == 1 and not t.full
    assert t.primary_tag is None


def test_tgt_slots_with_volume_tags_and_sources():
    slots = parse_element_status(TGT_SLOTS)
    assert [s.address for s in slots] == list(range(1000, 1006))
    assert all(s.full for s in slots)
    assert [s.primary_tag for s in slots] == ["RL0001", "RL0002", "RL0003", "RL0004",
                                              "RL0005", "CLN001"]  # fmt: skip
    # the cartridges of 1000 and 1001 went to drive 500 and back: their source is the drive
    assert slots[0].source == 500 and slots[1].source == 500 and slots[2].source is None
    # the last descriptor lost its volume tag trailer, not the barcode
    assert slots[-1].primary_tag == "CLN001"


def test_tgt_mail_slots_are_empty_and_flagless():
    ie = parse_element_status(TGT_MAILSLOTS)
    assert [(e.type, e.address, e.full) for e in ie] == [
        (SmcElementType.IMPORT_EXPORT, 10, False),
        (SmcElementType.IMPORT_EXPORT, 11, False),
    ]
    assert ie[0].impexp is False and ie[0].access is False  # tgt never sets them


def test_tgt_drive_identifiers_and_truncation():
    d0, d1 = parse_element_status(TGT_DRIVES_DVCID)
    assert (d0.address, d1.address) == (500, 501)
    assert d0.identifier_type == 1 and not d0.identifier_truncated
    assert d0.serial == "VTLD00000"
    assert d1.identifier_truncated and d1.serial == "VT"


def test_tgt_without_voltag_loses_the_last_source_address():
    slots = parse_element_status(TGT_SLOTS_NO_VOLTAG)
    assert len(slots) == 6
    assert slots[0].source == 500
    assert slots[-1].address == 1005 and slots[-1].full and slots[-1].source is None


def test_to_element_maps_types_and_flags():
    (d0, _) = parse_element_status(TGT_DRIVES_DVCID)
    e = d0.to_element(flags_reliable=False)
    assert e.type is ElementType.DRIVE and e.identifier == "VTLD00000" and e.accessible
    assert d0.to_element(flags_reliable=True).accessible is False  # ACCESS bit clear


def standard_report() -> bytes:
    """An SMC-3 library: picker, two slots, a mail slot with an operator's cartridge, a drive
    with a loaded cleaning cartridge and an exception, alternate tags, DVCID."""
    storage = [
        ElementStatus(SmcElementType.STORAGE, 0x1000, True, access=True, primary_tag="A00001L8",
                      medium_type=1),
        ElementStatus(SmcElementType.STORAGE, 0x1001, False, access=True),
    ]  # fmt: skip
    ie = [
        ElementStatus(SmcElementType.IMPORT_EXPORT, 0x10, True, access=True, impexp=True,
                      inenab=True, exenab=True, primary_tag="NEW001L8"),
    ]  # fmt: skip
    drive = [
        ElementStatus(SmcElementType.DATA_TRANSFER, 0x100, True, except_=True, access=True,
                      asc=0x30, ascq=0x03, source=0x1002, primary_tag="CLN001L1",
                      medium_type=2, identifier="IBM     ULT3580-TD8     1013000123",
                      identifier_type=1),
    ]  # fmt: skip
    pages = [
        encode_page(SmcElementType.TRANSPORT,
                    [ElementStatus(SmcElementType.TRANSPORT, 1, False)], pvoltag=False),
        encode_page(SmcElementType.STORAGE, storage, pvoltag=True),
        encode_page(SmcElementType.IMPORT_EXPORT, ie, pvoltag=True),
        encode_page(SmcElementType.DATA_TRANSFER, drive, pvoltag=True, dvcid_length=34),
    ]  # fmt: skip
    return encode_report(pages, 1, 5)


def test_standard_report_all_pages():
    report = standard_report()
    assert report_length(report) == len(report)
    els = parse_element_status(report)
    assert [e.type for e in els] == [SmcElementType.TRANSPORT, SmcElementType.STORAGE,
                                     SmcElementType.STORAGE, SmcElementType.IMPORT_EXPORT,
                                     SmcElementType.DATA_TRANSFER]  # fmt: skip
    t, s0, s1, ie, d = els
    assert t.primary_tag is None and t.access is None
    assert (s0.full, s0.primary_tag, s0.medium_type, s0.access) == (True, "A00001L8", 1, True)
    assert not s1.full and s1.primary_tag is None
    assert ie.impexp and ie.inenab and ie.exenab and ie.primary_tag == "NEW001L8"
    assert d.except_ and (d.asc, d.ascq) == (0x30, 0x03) and d.medium_type == 2
    assert d.source == 0x1002 and d.serial == "1013000123"
    e = d.to_element()
    assert e.exception == "asc/ascq 30/03" and e.source == 0x1002 and e.barcode == "CLN001L1"
    assert s1.to_element().barcode is None


def test_alternate_volume_tag():
    e = ElementStatus(SmcElementType.STORAGE, 7, True, primary_tag="P1", alternate_tag="A1")
    desc = bytearray(12)
    desc[0:2] = (7).to_bytes(2, "big")
    desc[2] = 0x09
    desc += b"P1".ljust(32) + bytes(4) + b"A1".ljust(32) + bytes(4)
    page = bytes([2, 0xC0]) + len(desc).to_bytes(2, "big") + b"\0" + len(desc).to_bytes(3, "big")
    (got,) = parse_element_status(encode_report([page + bytes(desc)], 7, 1))
    assert (got.primary_tag, got.alternate_tag, got.access) == ("P1", "A1", True)
    assert e.alternate_tag == "A1"


def test_binary_identifier_is_hex():
    desc = bytearray(12) + bytes([0x01, 0x03, 0, 8]) + bytes.fromhex("5000e11234567890")
    desc[0:2] = (0x100).to_bytes(2, "big")
    page = bytes([4, 0]) + len(desc).to_bytes(2, "big") + b"\0" + len(desc).to_bytes(3, "big")
    (d,) = parse_element_status(encode_report([page + bytes(desc)], 0x100, 1))
    assert d.identifier == "5000e11234567890" and d.serial == "5000e11234567890"


def test_garbage_is_rejected():
    with pytest.raises(ElementStatusError):
        parse_element_status(b"\x00" * 4)
    bad = encode_report([bytes([9, 0, 0, 16, 0, 0, 0, 0])], 0, 0)
    with pytest.raises(ElementStatusError):
        parse_element_status(bad)


# -- drive to element mapping -------------------------------------------------------------


class _Drive:
    def __init__(self, name: str, serial: str) -> None:
        self.name, self.serial = name, serial


def _el(addr: int, ident: str, truncated: bool = False) -> ElementStatus:
    return ElementStatus(SmcElementType.DATA_TRANSFER, addr, False, identifier=ident,
                         identifier_type=1, identifier_truncated=truncated)  # fmt: skip


def test_map_drives_exact_and_prefix():
    d0, d1 = _Drive("d0", "VTLD00000"), _Drive("d1", "VTLD00001")
    els = [
        _el(500, "REELFS  VTL-DRIVE       VTLD00000"),
        _el(501, "REELFS  VTL-DRIVE       VT", True),
    ]
    assert map_drives([d1, d0], els) == {500: d0, 501: d1}  # type: ignore[list-item]


def test_map_drives_ambiguous_prefix_fails():
    d0, d1 = _Drive("d0", "VTLD00000"), _Drive("d1", "VTLD00001")
    els = [
        _el(500, "REELFS  VTL-DRIVE       VT", True),
        _el(501, "REELFS  VTL-DRIVE       VT", True),
    ]
    with pytest.raises(LibraryMappingError, match="drive_elements"):
        map_drives([d0, d1], els)  # type: ignore[list-item]


def test_map_drives_unknown_serial_fails():
    with pytest.raises(LibraryMappingError):
        map_drives([_Drive("d0", "XYZ")], [_el(500, "REELFS  VTL-DRIVE       ABC")])  # type: ignore[list-item]
