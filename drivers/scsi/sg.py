"""Linux SCSI generic transport: the SG_IO ioctl on `/dev/sgN` with a ctypes `sg_io_hdr`.

Kept thin and split in two pure halves that the unit tests exercise without a kernel SCSI
subsystem: `build_request()` fills an `sg_io_hdr` for a CDB and its buffers, and
`parse_reply()` turns the filled-in header and sense buffer into a `Result` (SCSI status,
data actually transferred from `resid`, sense), or a `TransportError` for host adapter and
driver failures. `SgDevice` only opens the node and calls `fcntl.ioctl` in between.

The kernel's st driver is not involved: /dev/sgN talks to the device directly, so the
driver sees every CHECK CONDITION itself (st would turn them into errno values).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass
from typing import Any

from drivers.scsi.device import Result, ScsiDevice, Status, TransportError
from drivers.scsi.sense import SenseFormatError, parse_sense

SG_IO = 0x2285
SG_INTERFACE_ID = ord("S")
SG_DXFER_NONE = -1
SG_DXFER_TO_DEV = -2
SG_DXFER_FROM_DEV = -3
SG_INFO_OK_MASK = 0x1
SENSE_BUFFER = 252

# host_status values (include/scsi/scsi.h DID_*), the ones worth naming
HOST_STATUS = {
    0x00: "DID_OK",
    0x01: "DID_NO_CONNECT",
    0x02: "DID_BUS_BUSY",
    0x03: "DID_TIME_OUT",
    0x04: "DID_BAD_TARGET",
    0x05: "DID_ABORT",
    0x06: "DID_PARITY",
    0x07: "DID_ERROR",
    0x08: "DID_RESET",
    0x09: "DID_BAD_INTR",
    0x0A: "DID_PASSTHROUGH",
    0x0B: "DID_SOFT_ERROR",
    0x0D: "DID_REQUEUE",
    0x0E: "DID_TRANSPORT_DISRUPTED",
    0x0F: "DID_TRANSPORT_FAILFAST",
}
DRIVER_SENSE = 0x08
DRIVER_TIMEOUT = 0x06


class SgIoHdr(ctypes.Structure):
    """`struct sg_io_hdr` of <scsi/sg.h> (88 bytes on LP64)."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


@dataclass
class Request:
    """An `sg_io_hdr` and the buffers it points into (they must outlive the ioctl)."""

    hdr: SgIoHdr
    cdb: Any
    sense: Any
    data: Any
    data_in: int


def build_request(
    cdb: bytes,
    *,
    data_in: int = 0,
    data_out: bytes | bytearray | memoryview | None = None,
    timeout: float = 60.0,
) -> Request:
    if not 6 <= len(cdb) <= 16:
        raise ValueError(f"CDB of {len(cdb)} bytes")
    if data_in and data_out is not None:
        raise ValueError("bidirectional transfers are not supported")
    cdb_buf = (ctypes.c_ubyte * len(cdb)).from_buffer_copy(cdb)
    sense_buf = (ctypes.c_ubyte * SENSE_BUFFER)()
    hdr = SgIoHdr()
    hdr.interface_id = SG_INTERFACE_ID
    hdr.cmd_len = len(cdb)
    hdr.cmdp = ctypes.addressof(cdb_buf)
    hdr.mx_sb_len = SENSE_BUFFER
    hdr.sbp = ctypes.addressof(sense_buf)
    hdr.timeout = min(int(timeout * 1000), 0xFFFFFFFE)
    data: Any = None
    if data_in:
        data = ctypes.create_string_buffer(data_in)
        hdr.dxfer_direction = SG_DXFER_FROM_DEV
        hdr.dxfer_len = data_in
        hdr.dxferp = ctypes.addressof(data)
    elif data_out is not None and len(data_out):
        payload = bytes(data_out)
        data = ctypes.create_string_buffer(payload, len(payload))
        hdr.dxfer_direction = SG_DXFER_TO_DEV
        hdr.dxfer_len = len(payload)
        hdr.dxferp = ctypes.addressof(data)
    else:
        hdr.dxfer_direction = SG_DXFER_NONE
    return Request(hdr, cdb_buf, sense_buf, data, data_in)


def parse_reply(req: Request, device: str = "sg") -> Result:
    """The Result of a completed SG_IO, or TransportError when the path failed."""
    h = req.hdr
    if h.host_status != 0:
        name = HOST_STATUS.get(h.host_status, f"host status {h.host_status:#x}")
        raise TransportError(f"{device}: {name}", position_lost=True)
    if (h.driver_status & 0x0F) == DRIVER_TIMEOUT:
        raise TransportError(f"{device}: command timed out", position_lost=True)
    sense = None
    if h.sb_len_wr:
        raw = bytes(req.sense[: h.sb_len_wr])
        try:
            sense = parse_sense(raw)
        except SenseFormatError:
            sense = None
    status_byte = h.status & 0xFE
    if status_byte == 0 and sense is not None and h.driver_status & DRIVER_SENSE:
        status_byte = Status.CHECK_CONDITION  # some HBAs report sense with a zero status
    try:
        status = Status(status_byte)
    except ValueError as e:
        raise TransportError(f"{device}: SCSI status {h.status:#x}") from e
    data = b""
    if req.data_in:
        got = max(0, req.data_in - max(0, h.resid))
        data = ctypes.string_at(req.data, got)
    return Result(status, data, sense, max(0, h.resid))


class SgDevice(ScsiDevice):
    """A SCSI device node, /dev/sgN."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def _transfer(
        self,
        cdb: bytes,
        data_in: int,
        data_out: bytes | bytearray | memoryview | None,
        timeout: float,
        idempotent: bool,
    ) -> Result:
        if self._fd is None:
            raise TransportError(f"{self.path} is closed")
        req = build_request(cdb, data_in=data_in, data_out=data_out, timeout=timeout)
        try:
            fcntl.ioctl(self._fd, SG_IO, req.hdr)
        except OSError as e:
            raise TransportError(f"{self.path}: SG_IO: {e}", position_lost=True) from e
        return parse_reply(req, self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
