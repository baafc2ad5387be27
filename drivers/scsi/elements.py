"""READ ELEMENT STATUS data (SMC-3 6.10): element status pages and descriptors, with primary
and alternate volume tags and device identifiers (DVCID).

The decoder takes every length from the data itself and stops at the end of what arrived:
a descriptor cut short (tgt's replies are 8 bytes short, so its last descriptor loses the
volume tag trailer or most of a drive serial) yields the fields that are complete and marks
the rest unknown instead of failing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.tape import Element, ElementType


class SmcElementType(enum.IntEnum):
    """SMC's element type codes."""

    ALL = 0
    TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


TO_ELEMENT_TYPE = {
    SmcElementType.TRANSPORT: ElementType.TRANSPORT,
    SmcElementType.STORAGE: ElementType.SLOT,
    SmcElementType.IMPORT_EXPORT: ElementType.IMPORT_EXPORT,
    SmcElementType.DATA_TRANSFER: ElementType.DRIVE,
}


class ElementStatusError(ValueError):
    """A READ ELEMENT STATUS answer that cannot be decoded."""


@dataclass(frozen=True)
class ElementStatus:
    """One element descriptor, everything SMC-3 defines that a library manager uses."""

    type: SmcElementType
    address: int
    full: bool
    except_: bool = False
    access: bool | None = None
    impexp: bool | None = None  # import/export: the cartridge was put in by an operator
    inenab: bool | None = None
    exenab: bool | None = None
    asc: int = 0
    ascq: int = 0
    invert: bool = False
    medium_type: int = 0  # 0 unspecified, 1 data, 2 cleaning, 3 diagnostic, 4 WORM
    source: int | None = None
    primary_tag: str | None = None
    alternate_tag: str | None = None
    identifier: str | None = None  # the device identifier, as text
    identifier_type: int | None = None
    identifier_truncated: bool = False

    @property
    def serial(self) -> str | None:
        """The drive serial in a T10 vendor ID identifier (vendor 8, product 16, serial)."""
        if self.identifier is None:
            return None
        if self.identifier_type == 1 and len(self.identifier) > 24:
            return self.identifier[24:].strip() or None
        return self.identifier.strip() or None

    def to_element(self, *, flags_reliable: bool = True) -> Element:
        exception = None
        if self.except_ or (self.asc, self.ascq) != (0, 0):
            exception = f"asc/ascq {self.asc:02X}/{self.ascq:02X}"
        accessible = True if (self.access is None or not flags_reliable) else self.access
        return Element(
            address=self.address,
            type=TO_ELEMENT_TYPE[self.type],
            full=self.full,
            barcode=self.primary_tag if self.full else None,
            source=self.source if self.full else None,
            identifier=self.serial,
            accessible=accessible,
            exception=exception,
        )


def _tag(raw: bytes) -> str | None:
    """A 36-byte volume tag: 32 bytes of identifier, space padded; None when blank."""
    text = raw[:32].replace(b"\x00", b" ").decode("ascii", errors="replace").strip()
    return text or None


def _descriptor(
    kind: SmcElementType, d: bytes, pvoltag: bool, avoltag: bool
) -> ElementStatus | None:
    if len(d) < 3:
        return None
    flags = d[2]
    has = len(d)
    fields: dict = {
        "type": kind,
        "address": int.from_bytes(d[0:2], "big"),
        "full": bool(flags & 0x01),
        "except_": bool(flags & 0x04),
    }
    if kind in (SmcElementType.STORAGE, SmcElementType.IMPORT_EXPORT, SmcElementType.DATA_TRANSFER):
        fields["access"] = bool(flags & 0x08)
    if kind is SmcElementType.IMPORT_EXPORT:
        fields["impexp"] = bool(flags & 0x02)
        fields["exenab"] = bool(flags & 0x10)
        fields["inenab"] = bool(flags & 0x20)
    if has >= 6:
        fields["asc"], fields["ascq"] = d[4], d[5]
    if has >= 12:
        fields["invert"] = bool(d[9] & 0x40)
        fields["medium_type"] = d[9] & 0x07
        if d[9] & 0x80:  # SVALID
            fields["source"] = int.from_bytes(d[10:12], "big")
    pos = 12
    if pvoltag:
        if has >= pos + 32:
            fields["primary_tag"] = _tag(d[pos : pos + 36])
        pos += 36
    if avoltag:
        if has >= pos + 32:
            fields["alternate_tag"] = _tag(d[pos : pos + 36])
        pos += 36
    if has >= pos + 4:
        code_set = d[pos] & 0x0F
        id_type = d[pos + 1] & 0x0F
        length = d[pos + 3]
        raw = d[pos + 4 : pos + 4 + length]
        if length:
            if code_set in (2, 3):  # ASCII, UTF-8
                text = raw.replace(b"\x00", b" ").decode("ascii", errors="replace").rstrip()
            else:
                text = raw.hex()
            fields["identifier"] = text
            fields["identifier_type"] = id_type
            fields["identifier_truncated"] = len(raw) < length
    return ElementStatus(**fields)


def parse_element_status(data: bytes) -> list[ElementStatus]:
    """Every descriptor of every element status page in the reply."""
    if len(data) < 8:
        raise ElementStatusError(f"element status data shorter than its header ({len(data)})")
    out: list[ElementStatus] = []
    pos = 8
    while pos + 8 <= len(data):
        kind_code = data[pos] & 0x0F
        try:
            kind = SmcElementType(kind_code)
        except ValueError as e:
            raise ElementStatusError(f"unknown element type code {kind_code}") from e
        pvoltag = bool(data[pos + 1] & 0x80)
        avoltag = bool(data[pos + 1] & 0x40)
        edl = int.from_bytes(data[pos + 2 : pos + 4], "big")
        count = int.from_bytes(data[pos + 5 : pos + 8], "big")
        if edl == 0:
            break
        body = data[pos + 8 : pos + 8 + count]
        for off in range(0, len(body), edl):
            desc = _descriptor(kind, body[off : off + edl], pvoltag, avoltag)
            if desc is not None:
                out.append(desc)
        pos += 8 + count
    return out


def report_length(data: bytes) -> int:
    """Bytes the whole report needs (header included), from the element status data header."""
    if len(data) < 8:
        return 8
    return 8 + int.from_bytes(data[5:8], "big")


# -- encoding, for tests and fakes -------------------------------------------------------


def encode_tag(text: str | None) -> bytes:
    return (text or "").encode("ascii").ljust(32, b" ")[:32] + bytes(4)


def encode_descriptor(e: ElementStatus, *, pvoltag: bool, dvcid_length: int | None = None) -> bytes:
    flags = (0x01 if e.full else 0) | (0x04 if e.except_ else 0) | (0x08 if e.access else 0)
    if e.type is SmcElementType.IMPORT_EXPORT:
        flags |= (0x02 if e.impexp else 0) | (0x10 if e.exenab else 0) | (0x20 if e.inenab else 0)
    d = bytearray(12)
    d[0:2] = e.address.to_bytes(2, "big")
    d[2] = flags
    d[4], d[5] = e.asc, e.ascq
    d[9] = (0x80 if e.source is not None else 0) | (0x40 if e.invert else 0) | e.medium_type
    if e.source is not None:
        d[10:12] = e.source.to_bytes(2, "big")
    if pvoltag:
        d += encode_tag(e.primary_tag)
    if dvcid_length is not None:
        ident = (e.identifier or "").encode("ascii")
        d += (
            bytes([0x02, e.identifier_type or 0, 0, dvcid_length])
            + ident.ljust(dvcid_length)[:dvcid_length]
        )
    return bytes(d)


def encode_page(
    kind: SmcElementType,
    elements: list[ElementStatus],
    *,
    pvoltag: bool,
    dvcid_length: int | None = None,
) -> bytes:
    descs = [encode_descriptor(e, pvoltag=pvoltag, dvcid_length=dvcid_length) for e in elements]
    edl = len(descs[0]) if descs else 12
    body = b"".join(descs)
    return (
        bytes([int(kind), 0x80 if pvoltag else 0])
        + edl.to_bytes(2, "big")
        + b"\x00"
        + len(body).to_bytes(3, "big")
        + body
    )


def encode_report(pages: list[bytes], first: int, count: int) -> bytes:
    body = b"".join(pages)
    return (
        first.to_bytes(2, "big")
        + count.to_bytes(2, "big")
        + b"\x00"
        + len(body).to_bytes(3, "big")
        + body
    )
