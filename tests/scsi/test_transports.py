"""The transports' pure parts: SG_IO request building and reply parsing (this kernel has no
SCSI subsystem, so no /dev/sg to talk to), iSCSI URL parsing, the libiscsi struct layouts,
device URL dispatch, and the quirks table."""

from __future__ import annotations

import ctypes

import pytest

from drivers.scsi import cdb, iscsi, sg
from drivers.scsi.device import Status, TransportError
from drivers.scsi.identity import Identity
from drivers.scsi.library import split_url
from drivers.scsi.quirks import STANDARD, TGT_CHANGER, TGT_TAPE, quirks_for
from drivers.scsi.sense import SenseKey, build_fixed_sense
from drivers.scsi.transport import open_device

# -- SG_IO -------------------------------------------------------------------------------


def test_sg_io_hdr_layout_matches_linux():
    assert ctypes.sizeof(sg.SgIoHdr) == 88
    assert sg.SgIoHdr.dxferp.offset == 16
    assert sg.SgIoHdr.cmdp.offset == 24
    assert sg.SgIoHdr.sbp.offset == 32
    assert sg.SgIoHdr.timeout.offset == 40
    assert sg.SgIoHdr.status.offset == 64
    assert sg.SgIoHdr.host_status.offset == 68
    assert sg.SgIoHdr.resid.offset == 72
    assert sg.SgIoHdr.info.offset == 80


def test_build_read_request():
    req = sg.build_request(cdb.read6(65536), data_in=65536, timeout=900)
    h = req.hdr
    assert h.interface_id == ord("S")
    assert h.dxfer_direction == sg.SG_DXFER_FROM_DEV
    assert h.dxfer_len == 65536 and h.dxferp == ctypes.addressof(req.data)
    assert h.cmd_len == 6 and ctypes.string_at(h.cmdp, 6) == cdb.read6(65536)
    assert h.mx_sb_len == sg.SENSE_BUFFER and h.sbp == ctypes.addressof(req.sense)
    assert h.timeout == 900_000


def test_build_write_and_no_data_requests():
    req = sg.build_request(cdb.write6(3), data_out=b"abc")
    assert req.hdr.dxfer_direction == sg.SG_DXFER_TO_DEV and req.hdr.dxfer_len == 3
    assert ctypes.string_at(req.hdr.dxferp, 3) == b"abc"
    req = sg.build_request(cdb.rewind())
    assert req.hdr.dxfer_direction == sg.SG_DXFER_NONE and req.hdr.dxfer_len == 0
    with pytest.raises(ValueError):
        sg.build_request(b"\x00\x00")
    with pytest.raises(ValueError):
        sg.build_request(cdb.read6(1), data_in=1, data_out=b"x")


def _complete(req, *, status=0, resid=0, sense=b"", host=0, driver=0, data=b""):
    """What the kernel writes back into the header and buffers."""
    req.hdr.status = status
    req.hdr.resid = resid
    req.hdr.host_status = host
    req.hdr.driver_status = driver
    if sense:
        ctypes.memmove(req.sense, sense, len(sense))
        req.hdr.sb_len_wr = len(sense)
    if data:
        ctypes.memmove(req.data, data, len(data))
    return req


def test_parse_good_read_with_residual():
    req = _complete(sg.build_request(cdb.read6(100, sili=True), data_in=100), resid=60,
                    data=b"x" * 40)  # fmt: skip
    r = sg.parse_reply(req)
    assert r.status is Status.GOOD and r.data == b"x" * 40 and r.residual == 60


def test_parse_check_condition_with_sense_and_data():
    sense = build_fixed_sense(SenseKey.NO_SENSE, 0, 1, filemark=True, information=100)
    req = _complete(sg.build_request(cdb.read6(100), data_in=100), status=0x02, resid=100,
                    sense=sense, driver=sg.DRIVER_SENSE)  # fmt: skip
    r = sg.parse_reply(req)
    assert r.check_condition and r.data == b""
    assert r.sense is not None and r.sense.filemark and r.sense.information == 100


def test_parse_sense_reported_with_zero_status():
    sense = build_fixed_sense(SenseKey.NOT_READY, 0x3A, 0)
    req = _complete(sg.build_request(bytes(6)), sense=sense, driver=sg.DRIVER_SENSE)
    assert sg.parse_reply(req).status is Status.CHECK_CONDITION


@pytest.mark.parametrize(("host", "driver"), [(0x03, 0), (0x01, 0), (0, sg.DRIVER_TIMEOUT)])
def test_parse_transport_failures(host, driver):
    req = _complete(sg.build_request(bytes(6)), host=host, driver=driver)
    with pytest.raises(TransportError) as e:
        sg.parse_reply(req, "/dev/sg3")
    assert e.value.position_lost


def test_parse_busy_status():
    req = _complete(sg.build_request(bytes(6)), status=0x08)
    assert sg.parse_reply(req).status is Status.BUSY


def test_sg_device_open_fails_cleanly_without_the_node():
    with pytest.raises(OSError):
        open_device("/dev/sg-does-not-exist")


# -- iSCSI -------------------------------------------------------------------------------


def test_parse_iscsi_urls():
    u = iscsi.parse_url("iscsi://127.0.0.1:3261/iqn.2024-01.org.reelfs:vtl/3")
    assert (u.host, u.port, u.target, u.lun) == ("127.0.0.1", 3261, "iqn.2024-01.org.reelfs:vtl", 3)
    assert u.portal == "127.0.0.1:3261"
    u = iscsi.parse_url("iscsi://bob%secret@tape.example/iqn.2008-09.com.example%3Aserver.tape/1")
    assert (u.user, u.password, u.port) == ("bob", "secret", 3260)
    assert u.target == "iqn.2008-09.com.example:server.tape"
    u = iscsi.parse_url("iscsi://[::1]:3300/iqn.x:y/0")
    assert u.host == "::1" and u.portal == "[::1]:3300"


@pytest.mark.parametrize(
    "url",
    ["iscsi://host", "iscsi://host/iqn.x", "iscsi://host/iqn.x/abc", "iscsi:///iqn/1", "sg:///x"],
)
def test_bad_iscsi_urls(url):
    with pytest.raises(ValueError):
        iscsi.parse_url(url)


def test_libiscsi_struct_layouts():
    # offsets of libiscsi 1.19's struct scsi_task (checked against its headers with gcc)
    assert ctypes.sizeof(iscsi._ScsiSense) == 16
    assert iscsi._ScsiTask.residual_status.offset == 32
    assert iscsi._ScsiTask.residual.offset == 40
    assert iscsi._ScsiTask.sense.offset == 48
    assert iscsi._ScsiTask.datain.offset == 64
    assert iscsi._ScsiTask.itt.offset == 96
    assert ctypes.sizeof(iscsi._IscsiData) == 16


def test_libiscsi_loads():
    lib = iscsi.library()
    assert lib.iscsi_create_context is not None


def test_url_dispatch_and_options():
    with pytest.raises(ValueError):
        open_device("tape0")
    assert split_url("iscsi://h/iqn.x/1?quirks=tgt") == ("iscsi://h/iqn.x/1", {"quirks": "tgt"})
    assert split_url("/dev/sg0") == ("/dev/sg0", {})


def test_iscsi_login_failure_is_a_transport_error():
    with pytest.raises(TransportError, match="login failed"):
        iscsi.IscsiDevice("iscsi://127.0.0.1:1/iqn.nowhere:none/1", connect_timeout=2)


# -- quirks ------------------------------------------------------------------------------


def ident(vendor, product, dtype=1, t10=()):
    return Identity(vendor, product, "0001", dtype, "S1", tuple(t10))


def test_quirks_by_inquiry_identity():
    assert quirks_for(ident("IET", "VIRTUAL-TAPE")) is TGT_TAPE
    assert quirks_for(ident("IET", "VIRTUAL-CHANGER", 8)) is TGT_CHANGER
    # renamed LUs: tgt's T10 vendor designator still gives it away
    assert quirks_for(ident("REELFS", "VTL-DRIVE", 1, ["IET     00010001"])) is TGT_TAPE
    assert quirks_for(ident("REELFS", "VTL-CHANGER", 8, ["IET     00010003"])) is TGT_CHANGER
    assert quirks_for(ident("IBM", "ULT3580-TD8", 1, ["IBM     ULT3580-TD8     10130001"])) is (
        STANDARD
    )
    assert quirks_for(ident("IET", "VIRTUAL-TAPE"), "standard") is STANDARD
    assert quirks_for(ident("HP", "Ultrium 6-SCSI"), "tgt") is TGT_TAPE
    with pytest.raises(ValueError):
        quirks_for(ident("HP", "Ultrium"), "bogus")


def test_tgt_quirks_cover_the_known_gaps():
    assert not TGT_TAPE.log_sense and not TGT_TAPE.locate and not TGT_TAPE.read_position
    assert TGT_TAPE.load_is_start_stop and TGT_TAPE.short_read_count_bug
    assert TGT_CHANGER.element_status_short_by == 8 and not TGT_CHANGER.import_export_commands
    assert STANDARD.with_(locate=False).locate is False and STANDARD.locate
