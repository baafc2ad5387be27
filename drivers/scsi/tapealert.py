"""The 64 TapeAlert flags of a tape drive (SSC-4 Annex A, log page 2Eh) and what they blame.

Each flag carries its severity (Information, Warning, Critical) and what it points at:
the cartridge (`MEDIA`), the drive itself (`DRIVE`), the drive's need for a cleaning
(`CLEANING`, a drive condition that a cleaning cartridge cures), either of the two
(`EITHER`: read/write failures the drive cannot attribute), or nothing the archive acts on
(`OTHER`: host, library or policy). `classify.py` uses this to tell a media failure from a
drive failure, the first question when a read or a write fails.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.StrEnum):
    """How serious a TapeAlert flag is (SSC: information, warning, critical)."""

    INFORMATION = "I"
    WARNING = "W"
    CRITICAL = "C"


class Blame(enum.StrEnum):
    """What a TapeAlert flag points at: the cartridge, the drive, cleaning."""

    MEDIA = "media"
    DRIVE = "drive"
    CLEANING = "cleaning"
    EITHER = "either"
    OTHER = "other"


@dataclass(frozen=True)
class TapeAlertFlag:
    """One TapeAlert flag as SSC defines it."""

    number: int
    name: str
    severity: Severity
    blame: Blame


_I, _W, _C = Severity.INFORMATION, Severity.WARNING, Severity.CRITICAL
_M, _D, _CL, _E, _O = Blame.MEDIA, Blame.DRIVE, Blame.CLEANING, Blame.EITHER, Blame.OTHER

_TABLE: tuple[tuple[int, str, Severity, Blame], ...] = (
    (1, "read warning", _W, _E),
    (2, "write warning", _W, _E),
    (3, "hard error", _W, _E),
    (4, "media", _C, _M),
    (5, "read failure", _C, _E),
    (6, "write failure", _C, _E),
    (7, "media life", _W, _M),
    (8, "not data grade", _W, _M),
    (9, "write protect", _C, _M),
    (10, "no removal", _I, _O),
    (11, "cleaning media", _I, _M),
    (12, "unsupported format", _I, _M),
    (13, "recoverable mechanical cartridge failure", _C, _M),
    (14, "unrecoverable mechanical cartridge failure", _C, _M),
    (15, "memory chip in cartridge failure", _W, _M),
    (16, "forced eject", _C, _O),
    (17, "read only format", _W, _M),
    (18, "tape directory corrupted on load", _W, _M),
    (19, "nearing media life", _I, _M),
    (20, "clean now", _C, _CL),
    (21, "clean periodic", _W, _CL),
    (22, "expired cleaning media", _C, _M),
    (23, "invalid cleaning tape", _C, _M),
    (24, "retension requested", _W, _D),
    (25, "dual-port interface error", _W, _D),
    (26, "cooling fan failure", _W, _D),
    (27, "power supply failure", _W, _D),
    (28, "power consumption", _W, _D),
    (29, "drive maintenance", _W, _D),
    (30, "hardware A", _C, _D),
    (31, "hardware B", _C, _D),
    (32, "interface", _W, _D),
    (33, "eject media", _C, _E),
    (34, "download fail", _W, _D),
    (35, "drive humidity", _W, _D),
    (36, "drive temperature", _W, _D),
    (37, "drive voltage", _W, _D),
    (38, "predictive failure", _C, _D),
    (39, "diagnostics required", _W, _D),
    # 40-46 were the autoloader flags of TapeAlert 2; SSC marks them obsolete.
    (40, "obsolete (loader hardware A)", _I, _O),
    (41, "obsolete (loader stray tape)", _I, _O),
    (42, "obsolete (loader hardware B)", _I, _O),
    (43, "obsolete (loader door)", _I, _O),
    (44, "obsolete (loader hardware C)", _I, _O),
    (45, "obsolete (loader magazine)", _I, _O),
    (46, "obsolete (loader predictive failure)", _I, _O),
    (47, "encryption control communication failure", _W, _O),
    (48, "encryption key manager error", _W, _O),
    (49, "diminished native capacity", _I, _M),
    (50, "lost statistics", _W, _M),
    (51, "tape directory invalid at unload", _W, _M),
    (52, "tape system area write failure", _C, _M),
    (53, "tape system area read failure", _C, _M),
    (54, "no start of data", _C, _M),
    (55, "loading failure", _C, _M),
    (56, "unrecoverable unload failure", _C, _D),
    (57, "automation interface failure", _C, _D),
    (58, "firmware failure", _W, _D),
    (59, "WORM medium integrity check failed", _W, _M),
    (60, "WORM medium overwrite attempted", _W, _M),
    (61, "encryption policy violation", _W, _O),
    (62, "reserved (62)", _I, _O),
    (63, "reserved (63)", _I, _O),
    (64, "reserved (64)", _I, _O),
)

FLAGS: dict[int, TapeAlertFlag] = {n: TapeAlertFlag(n, name, s, b) for n, name, s, b in _TABLE}

#: flags that mean the drive wants a cleaning cartridge
CLEANING_FLAGS = frozenset(n for n, f in FLAGS.items() if f.blame is Blame.CLEANING)


def describe(numbers: Iterable[int]) -> str:
    """'20 clean now (C, cleaning); 4 media (C, media)' for logs and error messages."""
    parts = []
    for n in sorted(numbers):
        f = FLAGS.get(n)
        parts.append(f"{n} {f.name} ({f.severity}, {f.blame})" if f else f"{n} unknown")
    return "; ".join(parts)


def blame(numbers: Iterable[int]) -> Blame | None:
    """What a set of flags points at, ignoring informational flags.

    MEDIA or DRIVE when the warning and critical flags agree on one of them (a drive that
    asks for cleaning counts as DRIVE), EITHER when they are mixed or only ambiguous,
    None when no flag speaks to the question.
    """
    media = drive = either = False
    for n in numbers:
        f = FLAGS.get(n)
        if f is None or f.severity is Severity.INFORMATION:
            continue
        if f.blame is Blame.MEDIA:
            media = True
        elif f.blame in (Blame.DRIVE, Blame.CLEANING):
            drive = True
        elif f.blame is Blame.EITHER:
            either = True
    if media and not drive:
        return Blame.MEDIA
    if drive and not media:
        return Blame.DRIVE
    if media or drive or either:
        return Blame.EITHER
    return None
