"""`ScsiMediaChanger` on a standards-conforming SMC-3 library (an in-memory model built from
SMC-3 byte layouts): what tgt's changer cannot show — mail slot doors (OPEN/CLOSE
IMPORT/EXPORT ELEMENT), PREVENT on the mail slots, IMPEXP and ACCESS bits, unit attentions
after an operator used a mail slot, a changer without DVCID, large inventories."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from drivers.scsi.changer import ScsiMediaChanger
from drivers.scsi.device import Result, ScsiDevice, Status
from drivers.scsi.elements import ElementStatus, SmcElementType, encode_page, encode_report
from drivers.scsi.library import map_drives
from drivers.scsi.quirks import STANDARD
from drivers.scsi.sense import SenseKey, build_fixed_sense, parse_sense
from drivers.tape import ElementType, IllegalRequestError


def _check(key, asc=0, ascq=0) -> Result:
    return Result(Status.CHECK_CONDITION, b"", parse_sense(build_fixed_sense(key, asc, ascq)))


@dataclass
class FakeSmcDevice(ScsiDevice):
    dvcid: bool = True
    elements: dict[int, ElementStatus] = field(default_factory=dict)
    unit_attentions: list[tuple[int, int]] = field(default_factory=list)
    ie_actions: list[tuple[int, int]] = field(default_factory=list)
    prevented: bool = False
    allocations: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__("fake://smc")

    def _transfer(self, cdb, data_in, data_out, timeout, idempotent) -> Result:
        op = cdb[0]
        if op == 0x12:
            if cdb[1] & 1:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
            std = bytearray(96)
            std[0] = 0x08
            std[8:16] = b"IBM     "
            std[16:32] = b"03584L32        "
            return Result(Status.GOOD, bytes(std))
        if self.unit_attentions:
            return _check(SenseKey.UNIT_ATTENTION, *self.unit_attentions.pop(0))
        if op == 0xB8:
            kind = SmcElementType(cdb[1] & 0x0F)
            dvcid = bool(cdb[6] & 1)
            if dvcid and not self.dvcid:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
            alloc = int.from_bytes(cdb[7:10], "big")
            self.allocations.append(alloc)
            els = [e for e in sorted(self.elements.values(), key=lambda e: e.address)
                   if e.type is kind]  # fmt: skip
            page = encode_page(kind, els, pvoltag=bool(cdb[1] & 0x10),
                               dvcid_length=34 if dvcid and kind == 4 else None)  # fmt: skip
            report = encode_report([page], els[0].address if els else 0, len(els))
            return Result(Status.GOOD, report[:alloc])
        if op == 0xA5:
            src = int.from_bytes(cdb[4:6], "big")
            dst = int.from_bytes(cdb[6:8], "big")
            if src not in self.elements or dst not in self.elements:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
            s, d = self.elements[src], self.elements[dst]
            if not s.full:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E)
            if d.full:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D)
            if d.type is SmcElementType.IMPORT_EXPORT and self.prevented:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
            self.elements[dst] = replace(d, full=True, primary_tag=s.primary_tag, source=src)
            self.elements[src] = replace(s, full=False, primary_tag=None, source=None)
            return Result(Status.GOOD)
        if op == 0x1B:
            self.ie_actions.append((int.from_bytes(cdb[2:4], "big"), cdb[4] & 0x1F))
            return Result(Status.GOOD)
        if op == 0x1E:
            self.prevented = bool(cdb[4] & 1)
            return Result(Status.GOOD)
        if op == 0x07:
            return Result(Status.GOOD)
        return _check(SenseKey.ILLEGAL_REQUEST, 0x20, 0)


def library_elements(slots: int = 4) -> dict[int, ElementStatus]:
    E = ElementStatus
    els = [E(SmcElementType.TRANSPORT, 1, False)]
    els += [E(SmcElementType.STORAGE, 0x400 + i, i < 2, access=True,
              primary_tag=f"A0000{i}L8" if i < 2 else None) for i in range(slots)]  # fmt: skip
    els += [E(SmcElementType.IMPORT_EXPORT, 0x300, True, access=True, impexp=True, inenab=True,
              exenab=True, primary_tag="NEW001L8"),
            E(SmcElementType.IMPORT_EXPORT, 0x301, False, access=True, inenab=True,
              exenab=True)]  # fmt: skip
    els += [E(SmcElementType.DATA_TRANSFER, 0x100 + i, False, access=True, identifier_type=1,
              identifier=f"IBM     ULT3580-TD8     10130000{i:02d}") for i in range(2)]  # fmt: skip
    return {e.address: e for e in els}


@pytest.fixture
def dev() -> FakeSmcDevice:
    return FakeSmcDevice(elements=library_elements())


def test_standard_changer_inventory(dev):
    ch = ScsiMediaChanger(dev)
    assert ch.quirks is STANDARD
    inv = ch.inventory()
    assert [e.address for e in inv.of_type(ElementType.SLOT)] == [0x400, 0x401, 0x402, 0x403]
    assert inv.find("A00001L8").address == 0x401
    mail = inv.by_address(0x300)
    assert mail.full and mail.barcode == "NEW001L8" and mail.accessible
    assert [d.identifier for d in inv.of_type(ElementType.DRIVE)] == ["1013000000", "1013000001"]


def test_import_opens_nothing_and_export_opens_the_door(dev):
    ch = ScsiMediaChanger(dev)
    moved = ch.import_all()
    assert moved == [("NEW001L8", 0x300, 0x402)]
    assert (0x300, 0x01) in dev.ie_actions  # CLOSE before taking the cartridge in
    assert ch.export(0x400) == 0x300
    assert dev.ie_actions[-1] == (0x300, 0x00)  # OPEN for the operator
    assert ch.inventory().by_address(0x300).barcode == "A00000L8"


def test_mail_slot_lock(dev):
    ch = ScsiMediaChanger(dev)
    assert ch.lock_import_export(True) is True
    with pytest.raises(IllegalRequestError, match="53/02"):
        ch.move(0x400, 0x301)
    ch.lock_import_export(False)
    ch.move(0x400, 0x301)


def test_unit_attention_after_the_operator_is_retried(dev):
    ch = ScsiMediaChanger(dev)
    dev.unit_attentions = [(0x28, 0x01), (0x29, 0x00)]
    assert len(ch.inventory().elements) == 9
    dev.unit_attentions = [(0x28, 0x01)]
    ch.move(0x400, 0x402)
    assert ch.inventory().by_address(0x402).source == 0x400


def test_changer_without_dvcid_needs_drive_elements(dev):
    dev.dvcid = False
    ch = ScsiMediaChanger(dev)
    drives = [e for e in ch.element_status() if e.type is SmcElementType.DATA_TRANSFER]
    assert [d.identifier for d in drives] == [None, None]

    class D:
        name, serial = "drive0", "1013000000"

    with pytest.raises(ValueError, match="drive_elements"):
        map_drives([D()], drives)  # type: ignore[list-item]


def test_large_inventory_is_read_with_a_bigger_allocation():
    dev = FakeSmcDevice(elements=library_elements(slots=1500))
    ch = ScsiMediaChanger(dev)
    inv = ch.inventory()
    assert len(inv.of_type(ElementType.SLOT)) == 1500
    assert max(dev.allocations) > 0xFFFF  # 1500 * 52 bytes did not fit in the first one
