"""Where a device departs from SSC/SMC, and how the drivers work around it.

`quirks_for(identity)` looks the device's INQUIRY identity up in `KNOWN`; a device that is not
listed gets `STANDARD` (SSC-4/SMC-3 behaviour) and the drivers still fall back, once and
with a log line, when a command turns out to be unsupported (ILLEGAL REQUEST 20/00 or 24/00).

tgt's virtual tape library is recognised by its INQUIRY vendor/product (`IET`,
`VIRTUAL-TAPE` / `VIRTUAL-CHANGER`) or, when an administrator renamed the LUs with
`vendor_id=`/`product_id=`, by the T10 vendor designator `IET ...` that tgt still puts in VPD
page 83h. A URL can force a set with `?quirks=tgt` or `?quirks=standard`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

from drivers.scsi.identity import PERIPHERAL_CHANGER, Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quirks:
    """Where a device departs from SSC/SMC, and what the drivers do instead."""

    name: str = "standard"

    # -- tape drives --------------------------------------------------------------------
    #: LOG SENSE works (TapeAlert 2Eh, error counters 02h/03h, capacity 31h, ...)
    log_sense: bool = True
    #: LOCATE(10)/(16) exist; without them the driver emulates locate by rewind + space
    locate: bool = True
    #: READ POSITION reports the real position; without it the driver tracks the position
    read_position: bool = True
    #: SPACE blocks counts filemarks as blocks and never reports FILEMARK or a residual, and
    #: SPACE filemarks in reverse is off by one: spacing is emulated with reads
    space_counts_filemarks: bool = False
    #: LOAD UNLOAD is SBC START STOP UNIT: byte 4 = 03h loads, 02h unloads (no rewind)
    load_is_start_stop: bool = False
    #: a variable read of a shorter record transfers (request - record) bytes (tgt < 1.0.94)
    short_read_count_bug: bool = False
    #: fixed-mode READ reports wrong-length records and EOD as MEDIUM ERROR 31/00: read one
    #: fixed block with a variable-mode READ of the block length instead
    fixed_read_broken: bool = False
    #: SILI is honoured (a short record answers GOOD with the transport residual)
    sili: bool = True
    #: MODE SELECT accepts mode pages (compression 0Fh, device configuration 10h)
    mode_select_pages: bool = True
    #: REQUEST SENSE returns the pending sense (tgt always answers NO SENSE)
    request_sense: bool = True
    #: the drive reports early warning before the physical end (tgt does not)
    early_warning: bool = True
    #: a cleaning cartridge makes the drive clean and report it (tgt loads it like data)
    cleaning: bool = True

    # -- media changers -----------------------------------------------------------------
    #: READ ELEMENT STATUS replies this many bytes short (the last descriptor loses its end)
    element_status_short_by: int = 0
    #: drive identifiers (DVCID) may be cut short: match drive serials by unique prefix
    dvcid_truncated: bool = False
    #: OPEN/CLOSE IMPORT/EXPORT ELEMENT exists
    import_export_commands: bool = True
    #: the changer honours PREVENT ALLOW MEDIUM REMOVAL (locks its mail slots)
    changer_prevent_allow: bool = True
    #: READ ELEMENT STATUS sets the ACCESS and IMPEXP bits
    element_flags_reliable: bool = True

    def with_(self, **changes: object) -> Quirks:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


STANDARD = Quirks()

TGT_TAPE = Quirks(
    name="tgt",
    log_sense=False,
    locate=False,
    read_position=False,
    space_counts_filemarks=True,
    load_is_start_stop=True,
    short_read_count_bug=True,
    fixed_read_broken=True,
    sili=False,
    mode_select_pages=False,
    request_sense=False,
    early_warning=False,
    cleaning=False,
)

TGT_CHANGER = Quirks(
    name="tgt",
    log_sense=False,
    element_status_short_by=8,
    dvcid_truncated=True,
    import_export_commands=False,
    changer_prevent_allow=False,
    element_flags_reliable=False,
    cleaning=False,
)


@dataclass(frozen=True)
class Match:
    """Which devices a quirks entry is for, by INQUIRY or T10 vendor id."""

    vendor: str | None = None
    product: str | None = None
    t10_prefix: str | None = None

    def matches(self, ident: Identity) -> bool:
        if self.t10_prefix is not None:
            return any(t.startswith(self.t10_prefix) for t in ident.t10_ids)
        return (self.vendor is None or ident.vendor == self.vendor) and (
            self.product is None or ident.product.startswith(self.product)
        )


#: (match, quirks for a tape drive, quirks for a changer), first match wins
KNOWN: list[tuple[Match, Quirks, Quirks]] = [
    (Match(vendor="IET", product="VIRTUAL-TAPE"), TGT_TAPE, TGT_CHANGER),
    (Match(vendor="IET", product="VIRTUAL-CHANGER"), TGT_TAPE, TGT_CHANGER),
    # tgt LUs renamed by the administrator still carry tgt's T10 designator ("IET" + ids).
    (Match(t10_prefix="IET     "), TGT_TAPE, TGT_CHANGER),
]


def quirks_for(ident: Identity, forced: str | None = None) -> Quirks:
    changer = ident.device_type == PERIPHERAL_CHANGER
    if forced:
        if forced == "standard":
            return STANDARD
        if forced == "tgt":
            return TGT_CHANGER if changer else TGT_TAPE
        raise ValueError(f"unknown quirks set {forced!r} (standard, tgt)")
    for match, tape, chg in KNOWN:
        if match.matches(ident):
            return chg if changer else tape
    return STANDARD


_noted: set[tuple[str, str]] = set()
_noted_lock = threading.Lock()


def note_fallback(device: str, what: str) -> None:
    """Log a workaround the first time it is used for a device, then stay quiet."""
    with _noted_lock:
        if (device, what) in _noted:
            return
        _noted.add((device, what))
    log.info("%s: %s", device, what)
