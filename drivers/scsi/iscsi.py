"""iSCSI transport: a thin ctypes binding to libiscsi (`libiscsi.so.7`), one session per LUN.

Why ctypes and not PyScsi's `ISCSIDevice`: that one needs the `cython-iscsi` binding, whose
tasks expose the SCSI status but never the sense data, and which hung on READ ELEMENT STATUS
against tgt. libiscsi itself gives everything a tape driver needs:

* The raw sense on CHECK CONDITION is in `task->datain` (two length bytes, then the sense);
  libiscsi's own parsed `task->sense` has no FILEMARK/EOM/ILI bits and no INFORMATION.
* On CHECK CONDITION libiscsi *replaces* `task->datain` with the sense, so the data of a read
  that ends in ILI or FILEMARK would be lost; reads therefore land in our own buffer, handed
  to libiscsi with `scsi_task_add_data_in_buffer`.
* Every task is freed with `scsi_free_scsi_task`.
* Commands go through libiscsi's *async* API with our own poll loop and deadline: when the
  synchronous call gives up early it leaves its PDU queued with a pointer to its own stack
  frame, which a later context teardown would write through. The login uses the sync call
  with `iscsi_set_timeout` as its time limit.
* libiscsi's automatic reconnect is switched off: it would silently resend queued commands,
  and resending a WRITE or a SPACE to a tape is not harmless. On a dropped session this
  module logs in again itself and resends only commands that are safe to repeat; for the
  others it raises `TransportError` with `position_lost=True`.

Throughput: libiscsi already offers MaxRecvDataSegmentLength = FirstBurstLength =
MaxBurstLength = 256 KiB as the initiator (its defaults; there is no API to change them); the
effective PDU size is the minimum of both sides, so raise the *target's* values (see
`examples/vtl/`). The struct layouts below are those of libiscsi 1.19's public headers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import select
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from drivers.scsi.device import Direction, Result, ScsiDevice, Status, TransportError
from drivers.scsi.sense import SenseFormatError, parse_sense

log = logging.getLogger(__name__)

# libiscsi status values beyond the SCSI ones (include/iscsi.h)
_STATUS_CANCELLED = 0x0F000000
_STATUS_ERROR = 0x0F000001
_STATUS_TIMEOUT = 0x0F000002
_SESSION_NORMAL = 2
_HEADER_DIGEST_NONE = 0
_RESIDUAL_UNDERFLOW = 1


class _ScsiSense(ctypes.Structure):
    """libiscsi's `struct scsi_sense`."""

    # The three 1-bit fields share the byte after `ascq` with nothing else: 16 bytes total.
    _fields_ = [
        ("error_type", ctypes.c_ubyte),
        ("key", ctypes.c_int),
        ("ascq", ctypes.c_int),
        ("flags", ctypes.c_ubyte),
        ("bit_pointer", ctypes.c_ubyte),
        ("field_pointer", ctypes.c_uint16),
    ]


class _ScsiData(ctypes.Structure):
    """libiscsi's `struct scsi_data`."""

    # scsi-lowlevel.h declares `int size` here (iscsi_data below has a size_t).
    _fields_ = [("size", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte))]


class _ScsiTask(ctypes.Structure):
    """The leading part of `struct scsi_task`; libiscsi allocates it, we only read."""

    _fields_ = [
        ("status", ctypes.c_int),
        ("cdb_size", ctypes.c_int),
        ("xfer_dir", ctypes.c_int),
        ("expxferlen", ctypes.c_int),
        ("cdb", ctypes.c_ubyte * 16),
        ("residual_status", ctypes.c_int),
        ("residual", ctypes.c_size_t),
        ("sense", _ScsiSense),
        ("datain", _ScsiData),
        ("mem", ctypes.c_void_p),
        ("ptr", ctypes.c_void_p),
        ("itt", ctypes.c_uint32),
        ("cmdsn", ctypes.c_uint32),
        ("lun", ctypes.c_uint32),
    ]


class _IscsiData(ctypes.Structure):
    """libiscsi's `struct iscsi_data`."""

    _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]


_TaskP = ctypes.POINTER(_ScsiTask)
# void (*iscsi_command_cb)(struct iscsi_context *, int status, void *command_data, void *private)
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libiscsi, loaded once, with the prototypes of the calls used here."""
    global _lib
    if _lib is not None:
        return _lib
    name = os.environ.get("REELFS_LIBISCSI") or ctypes.util.find_library("iscsi") or "libiscsi.so.7"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise TransportError(f"cannot load libiscsi ({name}): {e}; install libiscsi7") from e
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    protos: dict[str, tuple[Any, list[Any]]] = {
        "iscsi_create_context": (vp, [cp]),
        "iscsi_destroy_context": (i, [vp]),
        "iscsi_set_targetname": (i, [vp, cp]),
        "iscsi_set_session_type": (i, [vp, i]),
        "iscsi_set_header_digest": (i, [vp, i]),
        "iscsi_set_initiator_username_pwd": (i, [vp, cp, cp]),
        "iscsi_set_timeout": (i, [vp, i]),
        "iscsi_set_noautoreconnect": (None, [vp, i]),
        "iscsi_set_tcp_user_timeout": (None, [vp, i]),
        "iscsi_full_connect_sync": (i, [vp, cp, i]),
        "iscsi_logout_sync": (i, [vp]),
        "iscsi_disconnect": (i, [vp]),
        "iscsi_get_error": (cp, [vp]),
        "scsi_create_task": (_TaskP, [i, ctypes.POINTER(ctypes.c_ubyte), i, i]),
        "scsi_free_scsi_task": (None, [_TaskP]),
        "scsi_task_add_data_in_buffer": (i, [_TaskP, i, vp]),
        "iscsi_scsi_command_async": (
            i,
            [vp, i, _TaskP, _CALLBACK, ctypes.POINTER(_IscsiData), vp],
        ),
        "iscsi_get_fd": (i, [vp]),
        "iscsi_which_events": (i, [vp]),
        "iscsi_service": (i, [vp, i]),
    }
    for fname, (restype, argtypes) in protos.items():
        fn = getattr(lib, fname)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


@dataclass(frozen=True)
class IscsiUrl:
    """An `iscsi://` device URL, taken apart."""

    host: str
    port: int
    target: str
    lun: int
    user: str | None = None
    password: str | None = None

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> IscsiUrl:
    """`iscsi://[user[%password]@]host[:port]/<target-iqn>/<lun>` (libiscsi's URL form;
    the target name may be percent-encoded, e.g. `%3A` for `:`)."""
    if not url.startswith("iscsi://"):
        raise ValueError(f"not an iSCSI URL: {url!r}")
    rest = url[len("iscsi://") :]
    authority, sep, path = rest.partition("/")
    if not sep:
        raise ValueError(f"iSCSI URL without target: {url!r}")
    user = password = None
    if "@" in authority:
        cred, authority = authority.rsplit("@", 1)
        user, _, pw = cred.partition("%")
        password = pw or None
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port_s = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_s = authority.partition(":")
    target, sep, lun_s = path.rpartition("/")
    if not sep or not target:
        raise ValueError(f"iSCSI URL needs /<target-iqn>/<lun>: {url!r}")
    try:
        lun = int(lun_s)
        port = int(port_s) if port_s else 3260
    except ValueError as e:
        raise ValueError(f"bad port or LUN in {url!r}") from e
    if not host:
        raise ValueError(f"iSCSI URL without host: {url!r}")
    return IscsiUrl(host, port, urllib.parse.unquote(target), lun, user, password)


def default_initiator_name() -> str:
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname().lower())
    return f"iqn.2024-01.org.reelfs:{host or 'host'}"


class IscsiDevice(ScsiDevice):
    """One LUN over its own iSCSI session (libiscsi's sync API has one command in flight
    per context, so each drive and the changer get their own)."""

    def __init__(
        self,
        url: str,
        *,
        initiator_name: str | None = None,
        connect_timeout: float = 10.0,
        reconnect_for: float = 30.0,
    ) -> None:
        super().__init__(url)
        self.address = parse_url(url)
        self.initiator_name = initiator_name or default_initiator_name()
        self.connect_timeout = connect_timeout
        self.reconnect_for = reconnect_for
        self._lib = library()
        self._ctx: int | None = None
        self._inbuf = ctypes.create_string_buffer(0)
        self._done: int | None = None
        self._callback = _CALLBACK(self._on_done)
        #: iterations of the poll/iscsi_service loop, for the benchmark's accounting
        self.service_calls = 0
        self._connect()

    # -- session ----------------------------------------------------------------------

    def _connect(self) -> None:
        lib = self._lib
        ctx = lib.iscsi_create_context(self.initiator_name.encode())
        if not ctx:
            raise TransportError(f"{self.url}: cannot create an iSCSI context")
        try:
            a = self.address
            lib.iscsi_set_targetname(ctx, a.target.encode())
            lib.iscsi_set_session_type(ctx, _SESSION_NORMAL)
            lib.iscsi_set_header_digest(ctx, _HEADER_DIGEST_NONE)
            lib.iscsi_set_noautoreconnect(ctx, 1)
            lib.iscsi_set_tcp_user_timeout(ctx, int(self.connect_timeout * 1000))
            if a.user:
                lib.iscsi_set_initiator_username_pwd(
                    ctx, a.user.encode(), (a.password or "").encode()
                )
            lib.iscsi_set_timeout(ctx, max(1, math.ceil(self.connect_timeout)))
            if lib.iscsi_full_connect_sync(ctx, a.portal.encode(), a.lun) != 0:
                err = (lib.iscsi_get_error(ctx) or b"").decode(errors="replace")
                raise TransportError(f"{self.url}: iSCSI login failed: {err}")
            # Commands get their own deadline in `_wait`; no libiscsi timeout on their PDUs.
            lib.iscsi_set_timeout(ctx, 0)
        except BaseException:
            lib.iscsi_destroy_context(ctx)
            raise
        self._ctx = ctx

    def _drop(self) -> None:
        if self._ctx is not None:
            # No logout: the session is presumed broken; destroying the context closes it.
            self._lib.iscsi_destroy_context(self._ctx)
            self._ctx = None

    def _reconnect(self, why: str) -> None:
        self._drop()
        deadline = time.monotonic() + self.reconnect_for
        delay = 0.1
        while True:
            try:
                self._connect()
            except TransportError as e:
                if time.monotonic() + delay > deadline:
                    raise TransportError(
                        f"{self.url}: session lost ({why}) and not re-established: {e}"
                    ) from e
                time.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            log.warning("%s: iSCSI session re-established after %s", self.url, why)
            return

    def close(self) -> None:
        if self._ctx is not None:
            # A logout to a target that stopped answering must not hang the caller.
            self._lib.iscsi_set_timeout(self._ctx, max(1, math.ceil(self.connect_timeout)))
            self._lib.iscsi_logout_sync(self._ctx)
            self._drop()

    # -- commands ---------------------------------------------------------------------

    def _transfer(
        self,
        cdb: bytes,
        data_in: int,
        data_out: bytes | bytearray | memoryview | None,
        timeout: float,
        idempotent: bool,
    ) -> Result:
        if self._ctx is None:
            self._reconnect("closed session")
        outcome = self._run_once(cdb, data_in, data_out, timeout)
        if isinstance(outcome, Result):
            return outcome
        # The session failed under this command.
        try:
            self._reconnect(outcome)
        except TransportError as e:
            raise TransportError(e.message, position_lost=not idempotent) from e
        if idempotent:
            again = self._run_once(cdb, data_in, data_out, timeout)
            if isinstance(again, Result):
                return again
            self._drop()
            raise TransportError(f"{self.url}: opcode {cdb[0]:#04x} failed twice: {again}")
        raise TransportError(
            f"{self.url}: opcode {cdb[0]:#04x} interrupted ({outcome}); its effect is unknown",
            position_lost=True,
        )

    def _run_once(
        self,
        cdb: bytes,
        data_in: int,
        data_out: bytes | bytearray | memoryview | None,
        timeout: float,
    ) -> Result | str:
        """One attempt; a Result, or a string saying why the session is unusable."""
        lib = self._lib
        ctx = self._ctx
        cdb_buf = (ctypes.c_ubyte * len(cdb)).from_buffer_copy(cdb)
        if data_in:
            direction, xfer = Direction.READ, data_in
        elif data_out is not None and len(data_out):
            direction, xfer = Direction.WRITE, len(data_out)
        else:
            direction, xfer = Direction.NONE, 0
        task = lib.scsi_create_task(len(cdb), cdb_buf, int(direction), xfer)
        if not task:
            raise MemoryError("scsi_create_task failed")
        keep: Any = None
        out_desc = None
        abandoned = False
        try:
            if direction is Direction.READ:
                if len(self._inbuf) < data_in:
                    self._inbuf = ctypes.create_string_buffer(data_in)
                if lib.scsi_task_add_data_in_buffer(task, data_in, self._inbuf) != 0:
                    raise MemoryError("scsi_task_add_data_in_buffer failed")
            elif direction is Direction.WRITE:
                keep, address = _buffer_address(data_out)  # type: ignore[arg-type]
                out_desc = _IscsiData(xfer, address)
            self._done = None
            if (
                lib.iscsi_scsi_command_async(
                    ctx,
                    self.address.lun,
                    task,
                    self._callback,
                    ctypes.byref(out_desc) if out_desc else None,
                    None,
                )
                != 0
            ):
                err = (lib.iscsi_get_error(ctx) or b"").decode(errors="replace")
                return f"send failed: {err}"
            why = self._wait(ctx, time.monotonic() + timeout)
            if why is not None:
                # The PDU may still be queued inside libiscsi and point at the task: destroy
                # the context (which cancels it) before the task is freed below.
                abandoned = True
                return why
            t = task.contents
            status = self._done
            if status in (_STATUS_CANCELLED, _STATUS_ERROR, _STATUS_TIMEOUT):
                err = (lib.iscsi_get_error(ctx) or b"").decode(errors="replace")
                return f"session failed: {err}"
            residual = int(t.residual) if t.residual_status == _RESIDUAL_UNDERFLOW else 0
            data = b""
            if direction is Direction.READ:
                got = max(0, min(data_in, data_in - residual))
                data = ctypes.string_at(self._inbuf, got)
            sense = None
            if status == Status.CHECK_CONDITION and t.datain.size >= 2 and t.datain.data:
                raw = ctypes.string_at(t.datain.data, t.datain.size)
                length = int.from_bytes(raw[:2], "big")
                try:
                    sense = parse_sense(raw[2 : 2 + length])
                except SenseFormatError as e:
                    log.warning("%s: undecodable sense %s: %s", self.url, raw.hex(), e)
            try:
                st = Status(status)  # type: ignore[arg-type]
            except ValueError:
                return f"unexpected status {status:#x}"
            return Result(st, data, sense, residual)
        finally:
            if abandoned:
                self._drop()
            lib.scsi_free_scsi_task(task)
            del keep

    def _on_done(self, ctx: int, status: int, command_data: int, private: int) -> None:
        self._done = status

    def _wait(self, ctx: int, deadline: float) -> str | None:
        """Drive libiscsi until the command's callback ran; a reason string on failure."""
        lib = self._lib
        poller = select.poll()
        while self._done is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timed out"
            fd = lib.iscsi_get_fd(ctx)
            if fd < 0:
                return "socket closed"
            poller.register(fd, lib.iscsi_which_events(ctx))
            ready = poller.poll(min(remaining, 1.0) * 1000)
            revents = ready[0][1] if ready else 0
            self.service_calls += 1
            if lib.iscsi_service(ctx, revents) < 0:
                err = (lib.iscsi_get_error(ctx) or b"").decode(errors="replace")
                return f"session failed: {err}"
        return None


def _buffer_address(data: bytes | bytearray | memoryview) -> tuple[Any, int]:
    """A C address for the bytes to send, without copying them where Python allows it."""
    if isinstance(data, bytes):
        holder = ctypes.c_char_p(data)
        return holder, ctypes.cast(holder, ctypes.c_void_p).value or 0
    if isinstance(data, memoryview) and (data.readonly or not data.contiguous):
        data = bytes(data)
        holder = ctypes.c_char_p(data)
        return (holder, data), ctypes.cast(holder, ctypes.c_void_p).value or 0
    arr = (ctypes.c_char * len(data)).from_buffer(data)
    return arr, ctypes.addressof(arr)
