"""An in-memory SSC-4 tape drive behind the `ScsiDevice` interface, for the driver paths tgt
cannot exercise: LOCATE, READ POSITION, LOG SENSE (TapeAlert, capacity, counters), early
warning 00/02, VOLUME OVERFLOW, SILI, media and drive failures, unit attentions, cleaning.

Its replies are built from the standards' byte layouts (the same ones the decoders are
tested against); it is a model of a well-behaved LTO drive, not of any tgt behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.scsi import logpages
from drivers.scsi.device import Result, ScsiDevice, Status
from drivers.scsi.sense import SenseKey, build_fixed_sense, parse_sense

FM = None  # a filemark among the recorded objects


def _check(key, asc=0, ascq=0, data=b"", **kw) -> Result:
    return Result(
        Status.CHECK_CONDITION, data, parse_sense(build_fixed_sense(key, asc, ascq, **kw))
    )


def _good(data: bytes = b"") -> Result:
    return Result(Status.GOOD, data)


@dataclass
class FakeSscDevice(ScsiDevice):
    vendor: str = "IBM"
    product: str = "ULT3580-TD8"
    serial: str = "1013000123"
    loaded: bool = False
    cartridge: bool = True  # a cartridge is in the drive (put there by the changer)
    cleaning_cartridge: bool = False
    cleaning_turs: int = 2  # TURs answered 30/03 while cleaning
    cleaning_expired: bool = False
    objects: list[bytes | None] = field(default_factory=list)
    pos: int = 0
    block_length: int = 0
    early_warning_at: int = 1 << 30  # object count past which writes report EOM 00/02
    physical_end_at: int = 1 << 31
    capacity_mib: int = 12_000_000
    supports_locate16: bool = True
    supports_long_position: bool = True
    constant_position: bool = False  # answer READ POSITION like tgt does
    alerts: set[int] = field(default_factory=set)
    medium_error_at: set[int] = field(default_factory=set)  # reading these objects fails
    unit_attentions: list[tuple[int, int]] = field(default_factory=list)
    deferred_error: bool = False
    prevented: bool = False
    host_bytes: int = 0
    tape_bytes: int = 0
    write_corrected: int = 0
    log: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__("fake://ssc")

    # -- the device -------------------------------------------------------------------------

    def _transfer(self, cdb, data_in, data_out, timeout, idempotent) -> Result:
        self.log.append(cdb)
        op = cdb[0]
        if self.unit_attentions and op not in (0x12,):
            asc, ascq = self.unit_attentions.pop(0)
            return _check(SenseKey.UNIT_ATTENTION, asc, ascq)
        handler = getattr(self, f"_op_{op:02x}", None)
        if handler is None:
            return _check(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)
        result = handler(cdb, data_in, data_out)
        if data_in and len(result.data) > data_in:
            result.data = result.data[:data_in]
        return result

    def _ready(self) -> Result | None:
        if not self.loaded:
            return _check(SenseKey.NOT_READY, 0x3A, 0x00)
        return None

    def _op_12(self, cdb, data_in, data_out):  # INQUIRY
        if cdb[1] & 1:
            page = cdb[2]
            if page == 0x00:
                return _good(bytes([1, 0, 0, 3, 0, 0x80, 0x83]))
            if page == 0x80:
                sn = self.serial.encode()
                return _good(bytes([1, 0x80, 0, len(sn)]) + sn)
            if page == 0x83:
                ident = f"{self.vendor:<8}{self.product:<16}{self.serial}".encode()
                desc = bytes([2, 1, 0, len(ident)]) + ident
                return _good(bytes([1, 0x83, 0, len(desc)]) + desc)
            return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
        std = bytearray(96)
        std[0] = 0x01
        std[1] = 0x80
        std[2] = 6
        std[3] = 2
        std[4] = 91
        std[8:16] = self.vendor.encode().ljust(8)
        std[16:32] = self.product.encode().ljust(16)
        std[32:36] = b"J4D1"
        return _good(bytes(std))

    def _op_00(self, cdb, data_in, data_out):  # TEST UNIT READY
        if self.cleaning_cartridge and self.loaded:
            if self.cleaning_turs > 0:
                self.cleaning_turs -= 1
                return _check(SenseKey.NOT_READY, 0x30, 0x03)
            self.loaded = False
            self.cartridge = True  # ejected, waiting in the throat for the picker
            if self.cleaning_expired:
                self.alerts.add(22)
            return _check(SenseKey.NOT_READY, 0x3A, 0x00)
        return self._ready() or _good()

    def _op_03(self, cdb, data_in, data_out):  # REQUEST SENSE
        sense = build_fixed_sense(SenseKey.NO_SENSE, 0, 0x17 if 20 in self.alerts else 0)
        return _good(sense)

    def _op_05(self, cdb, data_in, data_out):  # READ BLOCK LIMITS
        return _good(bytes([0x00]) + (8 << 20).to_bytes(3, "big") + (1).to_bytes(2, "big"))

    def _op_1b(self, cdb, data_in, data_out):  # LOAD UNLOAD
        if cdb[4] & 0x01:
            if not self.cartridge:
                return _check(SenseKey.NOT_READY, 0x3A, 0x00)
            self.loaded, self.pos = True, 0
            if self.cleaning_cartridge:
                return _check(SenseKey.NOT_READY, 0x30, 0x03)
            return _good()
        if self.prevented:
            return _check(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
        self.loaded, self.pos = False, 0
        return _good()

    def _op_1e(self, cdb, data_in, data_out):  # PREVENT ALLOW MEDIUM REMOVAL
        self.prevented = bool(cdb[4] & 1)
        return _good()

    def _op_1a(self, cdb, data_in, data_out):  # MODE SENSE(6)
        bd = bytes([0x5A, 0, 0, 0, 0]) + self.block_length.to_bytes(3, "big")
        page = bytes.fromhex("0f 0e c0 80 00000001 00000001 00000000")
        body = bytes([0, 0x10, 8]) + bd + page
        return _good(bytes([len(body)]) + body)

    def _op_15(self, cdb, data_in, data_out):  # MODE SELECT(6)
        data = bytes(data_out)
        if len(data) >= 12 and data[3] == 8:
            self.block_length = int.from_bytes(data[9:12], "big")
        return _good()

    def _op_01(self, cdb, data_in, data_out):  # REWIND
        if r := self._ready():
            return r
        self.pos = 0
        return _good()

    def _op_0a(self, cdb, data_in, data_out):  # WRITE(6)
        if r := self._ready():
            return r
        data = bytes(data_out)
        if self.deferred_error:
            self.deferred_error = False
            return _check(SenseKey.MEDIUM_ERROR, 0x0C, 0x00, deferred=True)
        if len(self.objects[: self.pos]) >= self.physical_end_at:
            return _check(SenseKey.VOLUME_OVERFLOW, 0, 2, eom=True, information=len(data))
        del self.objects[self.pos :]
        if cdb[1] & 1:
            n = int.from_bytes(cdb[2:5], "big")
            for i in range(n):
                self.objects.append(data[i * self.block_length : (i + 1) * self.block_length])
            self.pos += n
        else:
            self.objects.append(data)
            self.pos += 1
        self.host_bytes += len(data)
        self.tape_bytes += len(data) // 2  # compresses 2:1
        self.write_corrected += 1
        if self.pos > self.early_warning_at:
            return _check(SenseKey.NO_SENSE, 0, 2, eom=True)
        return _good()

    def _op_10(self, cdb, data_in, data_out):  # WRITE FILEMARKS(6)
        if r := self._ready():
            return r
        n = int.from_bytes(cdb[2:5], "big")
        del self.objects[self.pos :]
        self.objects.extend([FM] * n)
        self.pos += n
        return _good()

    def _op_08(self, cdb, data_in, data_out):  # READ(6)
        if r := self._ready():
            return r
        req = int.from_bytes(cdb[2:5], "big")
        sili = bool(cdb[1] & 2)
        if self.pos >= len(self.objects):
            return _check(SenseKey.BLANK_CHECK, 0, 5, eom=False, information=req)
        if self.pos in self.medium_error_at:
            return _check(SenseKey.MEDIUM_ERROR, 0x11, 0x00, information=req)
        obj = self.objects[self.pos]
        self.pos += 1
        if obj is FM:
            return _check(SenseKey.NO_SENSE, 0, 1, filemark=True, information=req)
        if cdb[1] & 1:  # fixed
            return _good(obj)
        if len(obj) == req or (len(obj) < req and sili):
            return _good(obj)
        return _check(SenseKey.NO_SENSE, 0, 0, ili=True, information=req - len(obj),
                      data=obj[:req])  # fmt: skip

    def _space_blocks(self, count: int) -> Result:
        step = 1 if count > 0 else -1
        for done in range(abs(count)):
            if step > 0:
                if self.pos >= len(self.objects):
                    return _check(SenseKey.BLANK_CHECK, 0, 5, information=abs(count) - done)
                obj = self.objects[self.pos]
                self.pos += 1
                if obj is FM:
                    return _check(SenseKey.NO_SENSE, 0, 1, filemark=True,
                                  information=abs(count) - done)  # fmt: skip
            else:
                if self.pos == 0:
                    return _check(SenseKey.NO_SENSE, 0, 4, eom=True, information=abs(count) - done)
                if self.objects[self.pos - 1] is FM:
                    return _check(SenseKey.NO_SENSE, 0, 1, filemark=True,
                                  information=abs(count) - done)  # fmt: skip
                self.pos -= 1
        return _good()

    def _space_filemarks(self, count: int) -> Result:
        left = abs(count)
        while left:
            if count > 0:
                if self.pos >= len(self.objects):
                    return _check(SenseKey.BLANK_CHECK, 0, 5, information=left)
                if self.objects[self.pos] is FM:
                    left -= 1
                self.pos += 1
            else:
                if self.pos == 0:
                    return _check(SenseKey.NO_SENSE, 0, 4, eom=True, information=left)
                self.pos -= 1
                if self.objects[self.pos] is FM:
                    left -= 1
        return _good()

    def _op_11(self, cdb, data_in, data_out):  # SPACE(6)
        if r := self._ready():
            return r
        code = cdb[1] & 0x0F
        raw = int.from_bytes(cdb[2:5], "big")
        count = raw - (1 << 24) if raw & 0x800000 else raw
        if code == 0:
            return self._space_blocks(count)
        if code == 1:
            return self._space_filemarks(count)
        if code == 3:
            self.pos = len(self.objects)
            return _good()
        return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)

    def _locate(self, target: int) -> Result:
        if target > len(self.objects):
            self.pos = len(self.objects)
            return _check(SenseKey.BLANK_CHECK, 0, 5)
        self.pos = target
        return _good()

    def _op_92(self, cdb, data_in, data_out):  # LOCATE(16)
        if not self.supports_locate16:
            return _check(SenseKey.ILLEGAL_REQUEST, 0x20, 0)
        return self._ready() or self._locate(int.from_bytes(cdb[4:12], "big"))

    def _op_2b(self, cdb, data_in, data_out):  # LOCATE(10)
        return self._ready() or self._locate(int.from_bytes(cdb[3:7], "big"))

    def _op_34(self, cdb, data_in, data_out):  # READ POSITION
        if r := self._ready():
            return r
        sa = cdb[1] & 0x1F
        if self.constant_position:
            return _good(bytes([0x20 if sa == 6 else 0x14]) + bytes(31 if sa == 6 else 19))
        files = sum(1 for o in self.objects[: self.pos] if o is FM)
        flags = (0x80 if self.pos == 0 else 0) | (0x01 if self.pos > self.early_warning_at else 0)
        if sa == 6:
            if not self.supports_long_position:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
            return _good(bytes([flags, 0, 0, 0]) + bytes(4) + self.pos.to_bytes(8, "big")
                         + files.to_bytes(8, "big") + bytes(8))  # fmt: skip
        if sa == 0:
            return _good(bytes([flags | 0x30, 0, 0, 0]) + self.pos.to_bytes(4, "big") * 2
                         + bytes(8))  # fmt: skip
        return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)

    def _op_4d(self, cdb, data_in, data_out):  # LOG SENSE
        page = cdb[2] & 0x3F
        if page == 0x00:
            pages = bytes([0x00, 0x02, 0x03, 0x0C, 0x17, 0x2E, 0x31])
            return _good(bytes([0, 0, 0, len(pages)]) + pages)
        if page == 0x2E:
            flags, self.alerts = self.alerts, set()  # reading clears the flags
            return _good(logpages.build_page(
                0x2E, [(n, bytes([1 if n in flags else 0])) for n in range(1, 65)]))  # fmt: skip
        if page == 0x31:
            used_mib = sum(len(o or b"") for o in self.objects) >> 20
            rem = self.capacity_mib - used_mib
            return _good(logpages.build_page(0x31, [
                (1, rem.to_bytes(4, "big")), (2, bytes(4)),
                (3, self.capacity_mib.to_bytes(4, "big")), (4, bytes(4))]))  # fmt: skip
        if page == 0x17:
            return _good(logpages.build_page(0x17, [(1, (42).to_bytes(4, "big"))]))
        if page == 0x02:
            return _good(logpages.build_page(0x02, [
                (3, self.write_corrected.to_bytes(4, "big")), (6, bytes(4))]))  # fmt: skip
        if page == 0x03:
            return _good(logpages.build_page(0x03, [(3, bytes(4)), (6, bytes(4))]))
        if page == 0x0C:
            return _good(logpages.build_page(0x0C, [
                (0, self.host_bytes.to_bytes(8, "big")), (1, self.tape_bytes.to_bytes(8, "big")),
                (0x100, bytes([0, 0, 0, 1 if 20 in self.alerts else 0]))]))  # fmt: skip
        return _check(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
