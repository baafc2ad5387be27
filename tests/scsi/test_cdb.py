"""Every CDB the driver builds itself, byte by byte against SSC-4 / SPC-4 layouts, and the
ones taken from PyScsi's command classes."""

from __future__ import annotations

import pytest
from pyscsi.pyscsi.scsi_cdb_inquiry import Inquiry
from pyscsi.pyscsi.scsi_cdb_modesense6 import ModeSense6
from pyscsi.pyscsi.scsi_cdb_movemedium import MoveMedium
from pyscsi.pyscsi.scsi_cdb_openclose_exportimport_element import (
    OpenCloseImportExportElement,
)
from pyscsi.pyscsi.scsi_cdb_preventallow_mediumremoval import PreventAllowMediumRemoval
from pyscsi.pyscsi.scsi_cdb_readelementstatus import ReadElementStatus
from pyscsi.pyscsi.scsi_enum_command import smc, spc

from drivers.scsi import cdb
from drivers.scsi.commands import build


def h(b: bytes) -> str:
    return b.hex(" ")


def test_rewind():
    assert cdb.rewind() == bytes.fromhex("01 00 00 00 00 00")
    assert cdb.rewind(immediate=True) == bytes.fromhex("01 01 00 00 00 00")


def test_request_sense():
    assert cdb.request_sense() == bytes.fromhex("03 00 00 00 fc 00")
    assert cdb.request_sense(18, descriptor=True) == bytes.fromhex("03 01 00 00 12 00")
    with pytest.raises(ValueError):
        cdb.request_sense(256)


def test_read_block_limits():
    assert cdb.read_block_limits() == bytes.fromhex("05 00 00 00 00 00")


def test_read6_variable_fixed_sili():
    assert cdb.read6(262144) == bytes.fromhex("08 00 04 00 00 00")
    assert cdb.read6(1, sili=True) == bytes.fromhex("08 02 00 00 01 00")
    assert cdb.read6(3, fixed=True) == bytes.fromhex("08 01 00 00 03 00")
    assert cdb.read6(0xFFFFFF) == bytes.fromhex("08 00 ff ff ff 00")
    with pytest.raises(ValueError):
        cdb.read6(1 << 24)
    with pytest.raises(ValueError):
        cdb.read6(1, fixed=True, sili=True)


def test_write6():
    assert cdb.write6(0x12345) == bytes.fromhex("0a 00 01 23 45 00")
    assert cdb.write6(2, fixed=True) == bytes.fromhex("0a 01 00 00 02 00")


def test_write_filemarks():
    assert cdb.write_filemarks6() == bytes.fromhex("10 00 00 00 01 00")
    assert cdb.write_filemarks6(0) == bytes.fromhex("10 00 00 00 00 00")
    assert cdb.write_filemarks6(2, immediate=True) == bytes.fromhex("10 01 00 00 02 00")
    assert cdb.write_filemarks6(1, setmarks=True) == bytes.fromhex("10 02 00 00 01 00")


def test_space6_counts_are_signed_24_bit():
    assert cdb.space6(1) == bytes.fromhex("11 00 00 00 01 00")
    assert cdb.space6(-1) == bytes.fromhex("11 00 ff ff ff 00")
    assert cdb.space6(-2, cdb.SpaceCode.FILEMARKS) == bytes.fromhex("11 01 ff ff fe 00")
    assert cdb.space6(0, cdb.SpaceCode.END_OF_DATA) == bytes.fromhex("11 03 00 00 00 00")
    assert cdb.space6((1 << 23) - 1) == bytes.fromhex("11 00 7f ff ff 00")
    assert cdb.space6(-(1 << 23)) == bytes.fromhex("11 00 80 00 00 00")
    with pytest.raises(ValueError):
        cdb.space6(1 << 23)


def test_space16():
    assert h(cdb.space16(-1, cdb.SpaceCode.FILEMARKS)) == h(
        bytes.fromhex("91 01 00 00 ff ff ff ff ff ff ff ff 00 00 00 00")
    )
    assert cdb.space16(1 << 40)[4:12] == (1 << 40).to_bytes(8, "big")


def test_locate10():
    assert cdb.locate10(0x01020304) == bytes.fromhex("2b 00 00 01 02 03 04 00 00 00")
    assert cdb.locate10(5, partition=1, immediate=True) == bytes.fromhex(
        "2b 03 00 00 00 00 05 00 01 00"
    )
    with pytest.raises(ValueError):
        cdb.locate10(1 << 32)


def test_locate16():
    assert cdb.locate16(0x0102030405) == bytes.fromhex(
        "92 00 00 00 00 00 00 01 02 03 04 05 00 00 00 00"
    )
    assert cdb.locate16(7, partition=2)[:4] == bytes.fromhex("92 02 00 02")


def test_read_position_forms():
    assert cdb.read_position() == bytes.fromhex("34 00 00 00 00 00 00 00 00 00")
    assert cdb.read_position(cdb.ReadPositionForm.LONG) == bytes.fromhex(
        "34 06 00 00 00 00 00 00 00 00"
    )
    assert cdb.read_position(cdb.ReadPositionForm.EXTENDED) == bytes.fromhex(
        "34 08 00 00 00 00 00 00 20 00"
    )
    assert cdb.read_position_length(cdb.ReadPositionForm.SHORT) == 20
    assert cdb.read_position_length(cdb.ReadPositionForm.LONG) == 32


def test_load_unload():
    assert cdb.load_unload(cdb.LoadAction.LOAD) == bytes.fromhex("1b 00 00 00 01 00")
    assert cdb.load_unload(cdb.LoadAction.UNLOAD, immediate=True) == bytes.fromhex(
        "1b 01 00 00 00 00"
    )
    # tgt's START STOP UNIT reading: 03h loads, 02h ejects
    assert cdb.load_unload(cdb.LoadAction.LOAD | cdb.LoadAction.RETENSION)[4] == 0x03
    assert cdb.load_unload(cdb.LoadAction.RETENSION)[4] == 0x02
    assert cdb.load_unload(cdb.LoadAction.LOAD | cdb.LoadAction.HOLD)[4] == 0x09


def test_log_sense():
    assert cdb.log_sense(0x2E) == bytes.fromhex("4d 00 6e 00 00 00 00 40 00 00")
    assert cdb.log_sense(0x31, pc=cdb.PageControl.CURRENT_THRESHOLD, allocation=0x100) == (
        bytes.fromhex("4d 00 31 00 00 00 00 01 00 00")
    )
    assert cdb.log_sense(0x17, subpage=1, parameter_pointer=0x0203, save=True) == bytes.fromhex(
        "4d 01 57 01 00 02 03 40 00 00"
    )
    with pytest.raises(ValueError):
        cdb.log_sense(0x40)


def test_mode_select6():
    assert cdb.mode_select6(12) == bytes.fromhex("15 10 00 00 0c 00")
    assert cdb.mode_select6(28, pf=False, save=True) == bytes.fromhex("15 01 00 00 1c 00")


# -- the commands taken from PyScsi -----------------------------------------------------


def test_pyscsi_inquiry_vpd():
    cmd = build(Inquiry, spc.INQUIRY, evpd=1, page_code=0x80, alloclen=255)
    assert bytes(cmd.cdb) == bytes.fromhex("12 01 80 00 ff 00")


def test_pyscsi_mode_sense6():
    cmd = build(ModeSense6, spc.MODE_SENSE_6, 0x3F, alloclen=255)
    assert bytes(cmd.cdb) == bytes.fromhex("1a 00 3f 00 ff 00")


def test_pyscsi_prevent_allow():
    assert bytes(build(PreventAllowMediumRemoval, spc.PREVENT_ALLOW_MEDIUM_REMOVAL, 1).cdb) == (
        bytes.fromhex("1e 00 00 00 01 00")
    )


def test_pyscsi_read_element_status_voltag_dvcid():
    cmd = build(
        ReadElementStatus, smc.READ_ELEMENT_STATUS, 0, 0xFFFF, element_type=4, voltag=1,
        curdata=1, dvcid=1, alloclen=0xFFFF,
    )  # fmt: skip
    assert bytes(cmd.cdb) == bytes.fromhex("b8 14 00 00 ff ff 03 00 ff ff 00 00")


def test_pyscsi_move_medium():
    cmd = build(MoveMedium, smc.MOVE_MEDIUM, 1, 1000, 500)
    assert bytes(cmd.cdb) == bytes.fromhex("a5 00 00 01 03 e8 01 f4 00 00 00 00")


def test_pyscsi_open_close_import_export():
    cmd = build(OpenCloseImportExportElement, smc.OPEN_CLOSE_IMPORT_EXPORT_ELEMENT, 10, 1)
    assert bytes(cmd.cdb) == bytes.fromhex("1b 00 00 0a 01 00")


def test_pyscsi_commands_built_concurrently_keep_their_layout():
    """PyScsi keeps the layout being built in class attributes; the lock keeps threads apart."""
    import threading

    errors = []

    def worker(kind: str) -> None:
        for _ in range(300):
            if kind == "inq":
                c = build(Inquiry, spc.INQUIRY, evpd=1, page_code=0x80, alloclen=255)
                if bytes(c.cdb) != bytes.fromhex("12 01 80 00 ff 00"):
                    errors.append(bytes(c.cdb))
            else:
                c = build(MoveMedium, smc.MOVE_MEDIUM, 1, 1000, 500)
                if bytes(c.cdb) != bytes.fromhex("a5 00 00 01 03 e8 01 f4 00 00 00 00"):
                    errors.append(bytes(c.cdb))

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("inq", "move") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
