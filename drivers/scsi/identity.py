"""Who a SCSI device is: INQUIRY vendor, product, revision, serial (VPD 80h), designators (83h).

The identity keys the quirks table and matches drives to the changer's drive elements.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.scsi import commands
from drivers.scsi.device import CheckConditionError, ScsiDevice

PERIPHERAL_TAPE = 0x01
PERIPHERAL_CHANGER = 0x08


def _text(raw: bytes | bytearray | None) -> str:
    if not raw:
        return ""
    return bytes(raw).replace(b"\x00", b" ").decode("ascii", errors="replace").strip()


@dataclass(frozen=True)
class Identity:
    """Who a device says it is: INQUIRY and its VPD pages 80h and 83h."""

    vendor: str
    product: str
    revision: str
    device_type: int
    serial: str = ""
    #: T10 vendor ID designators of VPD page 83h ("VENDOR  id..."), association LU
    t10_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        serial = f" serial {self.serial}" if self.serial else ""
        return f"{self.vendor} {self.product} {self.revision}{serial}"


def read_identity(dev: ScsiDevice) -> Identity:
    std = commands.inquiry(dev, alloclen=96)
    serial = ""
    t10: list[str] = []
    try:
        pages = commands.inquiry(dev, evpd=1, page_code=0x00).get("vpd_pages", [])
    except CheckConditionError:
        pages = []
    if 0x80 in pages:
        try:
            serial = _text(commands.inquiry(dev, evpd=1, page_code=0x80).get("unit_serial_number"))
        except CheckConditionError:
            serial = ""
    if 0x83 in pages:
        try:
            vpd = commands.inquiry(dev, evpd=1, page_code=0x83)
        except CheckConditionError:
            vpd = {}
        for d in vpd.get("designator_descriptors", []):
            if d.get("designator_type") == 1 and d.get("association") == 0:
                body = d.get("designator", {})
                t10.append(
                    _text(body.get("t10_vendor_id")).ljust(8)
                    + _text(body.get("vendor_specific_id"))
                )
    return Identity(
        vendor=_text(std.get("t10_vendor_identification")),
        product=_text(std.get("product_identification")),
        revision=_text(std.get("product_revision_level")),
        device_type=int(std.get("peripheral_device_type", 0x1F)),
        serial=serial,
        t10_ids=tuple(t10),
    )


def is_lto(ident: Identity) -> bool:
    """An LTO (Ultrium) drive, by its INQUIRY product: IBM `ULT3580-TD8` / `ULTRIUM-TD9`,
    HPE `Ultrium 8-SCSI`, Quantum `ULTRIUM-HH8`, Tandberg `LTO-7 HH`."""
    product = ident.product.upper()
    return ident.device_type == PERIPHERAL_TAPE and (
        product.startswith("ULT") or product.startswith("LTO")
    )
