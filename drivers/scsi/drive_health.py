"""The health and counters of `ScsiTapeDrive`: status, log pages, TapeAlert, remaining
capacity, mount statistics and cleaning.

Log pages are optional on real drives and absent on tgt: the supported-pages list is asked
once and a device without LOG SENSE reports no alerts, capacity or counters rather than
failing. Mount statistics are the driver's own counts plus the drive's cumulative log
counters minus their values at load.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from drivers.scsi import cdb, commands, logpages, tapealert
from drivers.scsi.classify import is_unsupported
from drivers.scsi.drive_plumbing import DrivePlumbing, log
from drivers.scsi.quirks import note_fallback
from drivers.scsi.sense import SenseKey, parse_sense
from drivers.tape import (
    CleaningResult,
    DriveError,
    DriveStatus,
    NotReadyError,
    RecoverableError,
    TapeError,
)

if TYPE_CHECKING:
    from drivers.scsi import modepages
    from drivers.tape import Position

CLEANING_TIMEOUT = 900.0


class DriveHealth(DrivePlumbing):
    """What the drive reports about itself and the cartridge, and the cleaning cycle."""

    volume: str | None
    # the log pages the drive has, asked once; empty without LOG SENSE
    _log_pages: set[int] | None

    if TYPE_CHECKING:
        # provided by ScsiTapeDrive and DrivePositioning
        def _mode_sense(self) -> modepages.ModeData: ...
        def read_position(self) -> Position: ...
        def unload(self) -> None: ...

    def status(self) -> DriveStatus:
        sense = commands.test_unit_ready(self.device)
        if sense is not None and sense.key == SenseKey.UNIT_ATTENTION:
            sense = commands.test_unit_ready(self.device)
        ready = sense is None
        loaded = ready or not (
            sense is not None and sense.key == SenseKey.NOT_READY and sense.asc == 0x3A
        )
        st = DriveStatus(ready=ready, loaded=loaded, detail=str(sense) if sense else "")
        st.volume = self.volume
        st.early_warning = self._early_warning
        if ready:
            md = self._mode_sense()
            st.write_protected = md.write_protected
            st.block_size = md.block_length
            try:
                st.position = self.read_position()
            except RecoverableError:
                st.position = None
            st.early_warning = self._early_warning
        if self.quirks.request_sense and ready:
            rs = self._cmd(cdb.request_sense(), data_in=252)
            if rs.good and len(rs.data) >= 8:
                pending = parse_sense(rs.data)
                if (pending.asc, pending.ascq) != (0, 0):
                    st.detail = str(pending)
        return st

    def _supported_log_pages(self) -> set[int]:
        if not self.quirks.log_sense:
            return set()
        if self._log_pages is None:
            r = self._cmd(cdb.log_sense(logpages.SUPPORTED_PAGES), data_in=0x400)
            if is_unsupported(r.sense):
                note_fallback(
                    self.name, "LOG SENSE not supported: no TapeAlert, capacity, counters"
                )
                self.quirks = self.quirks.with_(log_sense=False)
                self._log_pages = set()
            else:
                self._check(r, "LOG SENSE supported pages")
                try:
                    self._log_pages = logpages.supported_pages(r.data)
                except logpages.LogPageError:
                    self._log_pages = set()
        return self._log_pages

    def _log_page(self, page: int) -> bytes | None:
        if page not in self._supported_log_pages():
            return None
        r = self._cmd(cdb.log_sense(page), data_in=0x4000)
        if is_unsupported(r.sense):
            self._log_pages.discard(page)  # type: ignore[union-attr]
            return None
        self._check(r, f"LOG SENSE {page:#04x}")
        return r.data

    def _read_alerts(self, *, quiet: bool = False) -> frozenset[int]:
        try:
            data = self._log_page(logpages.TAPE_ALERT)
        except TapeError:
            if not quiet:
                raise
            return frozenset()
        if data is None:
            return frozenset()
        flags = logpages.tape_alerts(data)
        self._stats.alerts_seen |= flags
        if flags:
            log.warning("%s: TapeAlert %s", self.name, tapealert.describe(flags))
        return flags

    def alerts(self) -> frozenset[int]:
        flags = self._read_alerts() | self._pending_alerts
        self._pending_alerts.clear()
        return frozenset(flags)

    def needs_cleaning(self) -> bool:
        """The drive asks for a cleaning cartridge (TapeAlert 20/21, or page 0Ch)."""
        flags = self._read_alerts(quiet=True)
        self._pending_alerts |= flags
        if flags & tapealert.CLEANING_FLAGS:
            return True
        data = self._log_page(logpages.SEQUENTIAL_ACCESS)
        return bool(data and logpages.sequential_access(data).get("cleaning_required"))

    def remaining_capacity(self) -> int | None:
        data = self._log_page(logpages.TAPE_CAPACITY)
        if data is not None:
            cap = logpages.tape_capacity(data)
            if cap.remaining is not None:
                return cap.remaining
        data = self._log_page(logpages.SEQUENTIAL_ACCESS)
        if data is not None:
            sa = logpages.sequential_access(data)
            ew = sa.get("native_capacity_bop_to_ew_mb")
            eod = sa.get("native_capacity_bop_to_eod_mb")
            if ew is not None and eod is not None:
                return max(0, ew - eod) * logpages.MB
        return None

    def _log_counters(self) -> dict[str, int]:
        """Cumulative counters whose difference over a mount is the mount's statistics."""
        out: dict[str, int] = {}
        for page, prefix in ((logpages.WRITE_ERRORS, "write_"), (logpages.READ_ERRORS, "read_")):
            try:
                data = self._log_page(page)
            except TapeError:
                data = None
            if data:
                for k, v in logpages.error_counters(data, page).items():
                    out[prefix + k] = v
        for page in (logpages.DATA_COMPRESSION, logpages.LTO_DATA_COMPRESSION):
            try:
                data = self._log_page(page)
            except TapeError:
                data = None
            if data:
                for k, v in logpages.data_compression(data).items():
                    if isinstance(v, int):
                        out["tape_" + k] = v
                break
        else:
            try:
                data = self._log_page(logpages.SEQUENTIAL_ACCESS)
            except TapeError:
                data = None
            if data:
                for k in (
                    "bytes_from_host",
                    "bytes_to_medium",
                    "bytes_from_medium",
                    "bytes_to_host",
                ):
                    v = logpages.sequential_access(data).get(k)
                    if v is not None:
                        out["tape_" + k] = v
        return out

    def statistics(self) -> dict[str, int | float]:
        st = self._stats
        out: dict[str, int | float] = {
            "mount_seconds": round(time.monotonic() - st.started, 3),
            "bytes_written": st.bytes_written,
            "bytes_read": st.bytes_read,
            "records_written": st.records_written,
            "records_read": st.records_read,
            "filemarks_written": st.filemarks_written,
            "filemarks_read": st.filemarks_read,
            "recovered_errors": st.recovered_errors,
            "tapealert_flags": len(st.alerts_seen),
        }
        now = self._log_counters()
        for k, v in now.items():
            out[k] = v - st.log_base.get(k, 0) if v >= st.log_base.get(k, 0) else v
        try:
            vol = self._log_page(logpages.VOLUME_STATISTICS)
        except TapeError:
            vol = None
        if vol:
            # the cartridge's own lifetime counters (mounts, data sets, retries), as they are
            out.update(logpages.volume_statistics(vol))
        host, medium = out.get("tape_bytes_from_host"), out.get("tape_bytes_to_medium")
        if host and medium:
            out["compression_ratio"] = round(host / medium, 3)
        elif "tape_bytes_from_host" not in out and st.bytes_written:
            out["compression_ratio"] = 1.0  # no hardware compression to report on
        return out

    # -- cleaning -----------------------------------------------------------------------

    def clean(self, timeout: float = CLEANING_TIMEOUT) -> CleaningResult:
        """Run the drive's part of a cleaning cycle after the changer inserted a cleaning
        cartridge: wait while it cleans, collect the verdict, and leave the cartridge
        unloaded for the changer to take back. Nothing is ever written to the cartridge."""
        deadline = time.monotonic() + timeout
        if not self.quirks.cleaning:
            note_fallback(
                self.name,
                "no cleaning semantics: the cleaning cartridge is only loaded and unloaded",
            )
            sense = self._wait_ready(deadline)
            if sense is not None and sense.key == SenseKey.NOT_READY and sense.asc == 0x3A:
                raise NotReadyError(f"{self.name}: no cartridge to clean with", sense=sense.raw)
            self._check(self._cmd(cdb.rewind()), "REWIND")
            self.unload()
            return CleaningResult(cleaned=False, detail="device has no cleaning semantics")
        r = self._cmd(cdb.load_unload(cdb.LoadAction.LOAD))
        first = r.sense if r.check_condition else None
        detail = str(first) if first else ""
        delay = self.poll_interval
        while time.monotonic() < deadline:
            sense = commands.test_unit_ready(self.device)
            if sense is None:
                break  # ready: some drives leave the cleaned cartridge loaded
            if sense.key == SenseKey.NOT_READY and sense.asc == 0x3A:
                break  # cleaned and ejected
            if (sense.asc, sense.ascq) == (0x30, 0x07):
                raise DriveError(f"{self.name}: cleaning failure: {sense}", sense=sense.raw)
            detail = str(sense)
            time.sleep(delay)  # the drive cleans for a minute or two; poll it
            delay = min(delay * 2, 5.0)
        else:
            raise DriveError(f"{self.name}: cleaning did not finish in {timeout:.0f}s")
        flags = self._read_alerts(quiet=True)
        expired = 22 in flags or 23 in flags
        if commands.test_unit_ready(self.device) is None:
            self._cmd(cdb.load_unload(cdb.LoadAction.UNLOAD))
        return CleaningResult(cleaned=not expired, alerts=flags, expired=expired, detail=detail)
