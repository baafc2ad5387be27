"""`ScsiMediaChanger`: the `MediaChanger` interface over SMC commands on a `ScsiDevice`.

The inventory asks one element type per READ ELEMENT STATUS, with volume tags, and with
device identifiers (DVCID) for the drive elements so drives can be matched to elements by
serial number. That is also what tgt needs: its "all types" reply is garbled, its replies are
8 bytes short (the decoder keeps what is complete), its "first element address" is wrong
(the decoder only uses each descriptor's own address) and it ignores the element count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.scsi import commands, elements
from drivers.scsi.classify import error_for, is_unsupported
from drivers.scsi.device import CheckConditionError, ScsiDevice
from drivers.scsi.elements import ElementStatus, SmcElementType
from drivers.scsi.identity import Identity, read_identity
from drivers.scsi.quirks import Quirks, note_fallback, quirks_for
from drivers.scsi.sense import SenseKey
from drivers.tape import (
    ElementType,
    IllegalRequestError,
    Inventory,
    MediaChanger,
    TapeError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: barcode prefixes of cleaning cartridges (the LTO convention: CLNxxxLn)
CLEANING_PREFIXES = ("CLN",)
FIRST_ALLOCATION = 0xFFFF
MAX_ALLOCATION = 0xFFFFFF


def is_cleaning(barcode: str | None, prefixes: tuple[str, ...] = CLEANING_PREFIXES) -> bool:
    return bool(barcode) and any(barcode.upper().startswith(p) for p in prefixes)  # type: ignore[union-attr]


class ScsiMediaChanger(MediaChanger):
    """An SMC media changer behind a `ScsiDevice`."""

    def __init__(
        self,
        device: ScsiDevice,
        *,
        quirks: Quirks | None = None,
        identity: Identity | None = None,
        cleaning_prefixes: tuple[str, ...] = CLEANING_PREFIXES,
    ) -> None:
        self.device = device
        self.identity = identity or read_identity(device)
        self.quirks = quirks or quirks_for(self.identity)
        self.name = f"changer {self.identity.vendor} {self.identity.product}".strip()
        self.cleaning_prefixes = cleaning_prefixes
        self._dvcid = True
        self._transport: int | None = None
        self._barcodes: dict[int, str | None] = {}  # address -> barcode, from the last scan
        #: drive element address -> the drive's full serial, once a library matched them;
        #: replaces identifiers the changer cut short in `inventory()`
        self.known_serials: dict[int, str] = {}
        #: called with (element address, barcode or None) after a move into / out of a
        #: drive element, so drive objects know their cartridge
        self.on_drive_change: Callable[[int, str | None], None] | None = None
        if self.quirks.name != "standard":
            note_fallback(
                self.device.url, f"{self.identity}: using the '{self.quirks.name}' quirks"
            )

    def __repr__(self) -> str:
        return f"ScsiMediaChanger({self.device.url!r})"

    # -- errors ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a command; a UNIT ATTENTION (door opened, mail slot used: 28/01, reset) is
        logged and the command sent again, since it was not run."""
        for attempt in range(3):
            try:
                return fn(self.device, *args, **kwargs)
            except CheckConditionError as e:
                ua = e.sense is not None and e.sense.key == SenseKey.UNIT_ATTENTION
                if not ua or attempt == 2:
                    raise
                log.info("%s: unit attention %s", self.device.url, e.sense)
        raise AssertionError("unreachable")

    def _raise(self, what: str, e: CheckConditionError) -> TapeError:
        return error_for(f"{self.name}: {what}", e.sense)

    # -- element status -------------------------------------------------------------------

    def _read_type(self, kind: SmcElementType) -> list[ElementStatus]:
        dvcid = self._dvcid and kind is SmcElementType.DATA_TRANSFER
        alloc = FIRST_ALLOCATION
        while True:
            try:
                data = self._call(
                    commands.read_element_status, kind, voltag=True, dvcid=dvcid, alloclen=alloc
                )
            except CheckConditionError as e:
                if dvcid and e.sense is not None and e.sense.key == SenseKey.ILLEGAL_REQUEST:
                    note_fallback(self.device.url, "READ ELEMENT STATUS without DVCID support")
                    self._dvcid = dvcid = False
                    continue
                raise self._raise(f"READ ELEMENT STATUS type {kind.name}", e) from e
            need = elements.report_length(data)
            if need > alloc and len(data) >= alloc and alloc < MAX_ALLOCATION:
                alloc = min(need, MAX_ALLOCATION)
                continue
            if self.quirks.element_status_short_by and need > len(data):
                note_fallback(
                    self.device.url,
                    f"READ ELEMENT STATUS replies {need - len(data)} bytes short: "
                    "the last descriptor is decoded as far as it goes",
                )
            break
        # Only descriptors of the type asked for: tgt's answers to other types are garbled.
        return [e for e in elements.parse_element_status(data) if e.type is kind]

    def element_status(self) -> list[ElementStatus]:
        """Every element with everything SMC reports about it, one type per command."""
        out: list[ElementStatus] = []
        for kind in (
            SmcElementType.TRANSPORT,
            SmcElementType.STORAGE,
            SmcElementType.IMPORT_EXPORT,
            SmcElementType.DATA_TRANSFER,
        ):
            out.extend(self._read_type(kind))
        self._barcodes = {e.address: e.primary_tag if e.full else None for e in out}
        transports = [e.address for e in out if e.type is SmcElementType.TRANSPORT]
        if transports:
            self._transport = transports[0]
        return out

    def inventory(self) -> Inventory:
        flags_ok = self.quirks.element_flags_reliable
        out = []
        for status in self.element_status():
            el = status.to_element(flags_reliable=flags_ok)
            if status.identifier_truncated and el.address in self.known_serials:
                el = dataclasses.replace(el, identifier=self.known_serials[el.address])
            out.append(el)
        return Inventory(out)

    # -- moving ---------------------------------------------------------------------------

    @property
    def transport(self) -> int:
        if self._transport is None:
            found = self._read_type(SmcElementType.TRANSPORT)
            self._transport = found[0].address if found else 0
        return self._transport

    def move(self, source: int, destination: int) -> None:
        try:
            self._call(commands.move_medium, self.transport, source, destination)
        except CheckConditionError as e:
            raise self._raise(f"move {source} -> {destination}", e) from e
        barcode = self._barcodes.pop(source, None)
        self._barcodes[source] = None
        self._barcodes[destination] = barcode
        if self.on_drive_change is not None:
            self.on_drive_change(source, None)
            self.on_drive_change(destination, barcode)

    def initialize_element_status(self) -> None:
        try:
            self._call(commands.initialize_element_status)
        except CheckConditionError as e:
            raise self._raise("INITIALIZE ELEMENT STATUS", e) from e

    # -- import/export (mail slots) ---------------------------------------------------------

    def _import_export(self, address: int, action: int, what: str) -> bool:
        if not self.quirks.import_export_commands:
            note_fallback(
                self.device.url, "no OPEN/CLOSE IMPORT/EXPORT ELEMENT: mail slots are plain slots"
            )
            return False
        try:
            self._call(commands.open_close_import_export, address, action)
        except CheckConditionError as e:
            if is_unsupported(e.sense):
                note_fallback(self.device.url, f"{what} not supported: mail slots are plain slots")
                self.quirks = self.quirks.with_(import_export_commands=False)
                return False
            raise self._raise(f"{what} {address}", e) from e
        return True

    def open_import_export(self, address: int) -> bool:
        """Unlock/open the mail slot for the operator; False where the changer has no door."""
        return self._import_export(address, commands.IE_OPEN, "OPEN IMPORT/EXPORT ELEMENT")

    def close_import_export(self, address: int) -> bool:
        return self._import_export(address, commands.IE_CLOSE, "CLOSE IMPORT/EXPORT ELEMENT")

    def lock_import_export(self, prevent: bool) -> bool:
        """PREVENT/ALLOW MEDIUM REMOVAL on the changer: lock the mail slots."""
        if not self.quirks.changer_prevent_allow:
            note_fallback(self.device.url, "changer has no PREVENT ALLOW MEDIUM REMOVAL")
            return False
        try:
            self._call(commands.prevent_allow, prevent)
        except CheckConditionError as e:
            if is_unsupported(e.sense):
                self.quirks = self.quirks.with_(changer_prevent_allow=False)
                return False
            raise self._raise("PREVENT ALLOW MEDIUM REMOVAL", e) from e
        return True

    def export(self, source: int, inventory: Inventory | None = None) -> int:
        """Move the cartridge at `source` into a free mail slot and open it; its address."""
        inv = inventory or self.inventory()
        free = [e for e in inv.of_type(ElementType.IMPORT_EXPORT) if not e.full]
        if not free:
            raise IllegalRequestError(f"{self.name}: no free import/export slot")
        self.move(source, free[0].address)
        self.open_import_export(free[0].address)
        return free[0].address

    def import_all(self, inventory: Inventory | None = None) -> list[tuple[str | None, int, int]]:
        """Move every cartridge waiting in a mail slot to a free storage slot:
        [(barcode, from, to)]."""
        inv = inventory or self.inventory()
        free = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
        moved = []
        for e in inv.of_type(ElementType.IMPORT_EXPORT):
            if not e.full:
                continue
            if not free:
                raise IllegalRequestError(f"{self.name}: no free slot for {e.barcode}")
            dest = free.pop(0)
            self.close_import_export(e.address)
            self.move(e.address, dest)
            moved.append((e.barcode, e.address, dest))
        return moved

    def is_cleaning(self, barcode: str | None) -> bool:
        return is_cleaning(barcode, self.cleaning_prefixes)

    def close(self) -> None:
        self.device.close()


__all__ = ["CLEANING_PREFIXES", "ScsiMediaChanger", "is_cleaning"]
