"""The commands taken from PyScsi's command classes, built safely and run on a `ScsiDevice`.

PyScsi builds CDBs through class attributes shared by all its command classes, so commands
are *built* under `device.PYSCSI_LOCK` and *run* outside it (a MOVE MEDIUM can take a minute
and must not hold up the drives). PyScsi's result parsers are used where they cope with what
devices really return (INQUIRY and its VPD pages); MODE SENSE data and READ ELEMENT STATUS
data are decoded by `modepages.py` and `elements.py`, because PyScsi 2.1 skips the block
descriptor, knows no tape mode pages, has no DVCID support and indexes past the end of a
short reply.
"""

from __future__ import annotations

from typing import Any

from pyscsi.pyscsi.scsi_cdb_initelementstatus import InitializeElementStatus
from pyscsi.pyscsi.scsi_cdb_inquiry import Inquiry
from pyscsi.pyscsi.scsi_cdb_modesense6 import ModeSense6
from pyscsi.pyscsi.scsi_cdb_movemedium import MoveMedium
from pyscsi.pyscsi.scsi_cdb_openclose_exportimport_element import (
    OpenCloseImportExportElement,
)
from pyscsi.pyscsi.scsi_cdb_preventallow_mediumremoval import PreventAllowMediumRemoval
from pyscsi.pyscsi.scsi_cdb_readelementstatus import ReadElementStatus
from pyscsi.pyscsi.scsi_cdb_testunitready import TestUnitReady
from pyscsi.pyscsi.scsi_enum_command import smc, spc, ssc

from drivers.scsi.device import PYSCSI_LOCK, CheckConditionError, ScsiDevice
from drivers.scsi.sense import Sense


def build(cls: type, *args: Any, **kwargs: Any) -> Any:
    """A PyScsi command object, built under the lock."""
    with PYSCSI_LOCK:
        return cls(*args, **kwargs)


def received(cmd: Any) -> bytes:
    """The bytes a PyScsi command really received (`ScsiDevice.execute` records the count)."""
    return bytes(cmd.datain[: getattr(cmd, "received", len(cmd.datain))])


def inquiry(dev: ScsiDevice, *, evpd: int = 0, page_code: int = 0, alloclen: int = 255) -> dict:
    cmd = build(Inquiry, spc.INQUIRY, evpd=evpd, page_code=page_code, alloclen=alloclen)
    dev.execute(cmd)
    with PYSCSI_LOCK:
        cmd.unmarshall(evpd=evpd)
    return cmd.result


def test_unit_ready(dev: ScsiDevice) -> Sense | None:
    """None when ready, else the sense explaining why not."""
    cmd = build(TestUnitReady, spc.TEST_UNIT_READY)
    try:
        dev.execute(cmd)
    except CheckConditionError as e:
        return e.sense
    return None


def mode_sense6(
    dev: ScsiDevice, page_code: int, *, sub_page_code: int = 0, dbd: int = 0, alloclen: int = 255
) -> bytes:
    cmd = build(
        ModeSense6,
        spc.MODE_SENSE_6,
        page_code,
        sub_page_code=sub_page_code,
        dbd=dbd,
        alloclen=alloclen,
    )
    dev.execute(cmd)
    return received(cmd)


def prevent_allow(dev: ScsiDevice, prevent: bool) -> None:
    dev.execute(
        build(PreventAllowMediumRemoval, spc.PREVENT_ALLOW_MEDIUM_REMOVAL, prevent=int(prevent))
    )


def read_element_status(
    dev: ScsiDevice,
    element_type: int,
    *,
    start: int = 0,
    count: int = 0xFFFF,
    voltag: bool = True,
    dvcid: bool = False,
    alloclen: int = 0xFFFF,
) -> bytes:
    cmd = build(
        ReadElementStatus,
        smc.READ_ELEMENT_STATUS,
        start,
        count,
        element_type=element_type,
        voltag=int(voltag),
        curdata=1,
        dvcid=int(dvcid),
        alloclen=alloclen,
    )
    dev.execute(cmd)
    return received(cmd)


def move_medium(dev: ScsiDevice, transport: int, source: int, destination: int) -> None:
    dev.execute(build(MoveMedium, smc.MOVE_MEDIUM, transport, source, destination))


def initialize_element_status(dev: ScsiDevice) -> None:
    dev.execute(build(InitializeElementStatus, smc.INITIALIZE_ELEMENT_STATUS))


# SMC-3 6.6 OPEN/CLOSE IMPORT/EXPORT ELEMENT action codes
IE_OPEN = 0x00
IE_CLOSE = 0x01


def open_close_import_export(dev: ScsiDevice, address: int, action: int) -> None:
    dev.execute(
        build(OpenCloseImportExportElement, smc.OPEN_CLOSE_IMPORT_EXPORT_ELEMENT, address, action)
    )


__all__ = [
    "build",
    "initialize_element_status",
    "inquiry",
    "mode_sense6",
    "move_medium",
    "open_close_import_export",
    "prevent_allow",
    "read_element_status",
    "received",
    "smc",
    "ssc",
    "test_unit_ready",
]
