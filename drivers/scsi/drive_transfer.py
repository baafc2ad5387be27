"""Data transfer for `ScsiTapeDrive`: writing records and filemarks, reading records.

A CHECK CONDITION on a tape transfer is often not an error: early warning on a write that
was performed, a filemark or a record of another length on a read. The data that came with
it is kept and the tracked position and mount counters move on. Reads handle both block
modes: fixed (with a variable-mode read of one block where fixed READ is broken, tgt) and
variable, with the record length taken from the residual, and the short-read transfer count
of tgt < 1.0.94 repaired.
"""

from __future__ import annotations

from drivers.scsi import cdb
from drivers.scsi.classify import is_end_of_data
from drivers.scsi.drive_plumbing import DrivePlumbing, log
from drivers.scsi.quirks import note_fallback
from drivers.scsi.sense import SenseKey
from drivers.tape import BlankCheckError, EndOfMediumError, FilemarkDetected, IncorrectLengthError


class DriveTransfer(DrivePlumbing):
    """WRITE(6), WRITE FILEMARKS and READ(6) with their sense outcomes."""

    # the fixed block length from MODE SENSE; 0 in variable-block mode
    _block_size: int

    def write_block(self, data: bytes | bytearray | memoryview) -> bool:
        n = len(data)
        if n == 0:
            raise ValueError("empty records are not written (tgt cannot read them back)")
        if self._block_size:
            if n % self._block_size:
                raise ValueError(
                    f"{n} bytes is not a multiple of the block size {self._block_size}"
                )
            blocks = n // self._block_size
            r = self._cmd(cdb.write6(blocks, fixed=True), data_out=data)
        else:
            blocks = 1
            r = self._cmd(cdb.write6(n), data_out=data)
        if r.good:
            self._wrote(blocks, n)
            return self._early_warning
        s = r.sense
        if s is not None and not s.deferred:
            if s.key in (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR) and s.eom:
                # Early warning (00/02 on real drives, 00/00 on tgt): the record is written.
                self._wrote(blocks, n)
                if not self._early_warning:
                    log.info("%s: early warning (%s)", self.name, s)
                self._early_warning = True
                return True
            if s.key == SenseKey.RECOVERED_ERROR:
                self._stats.recovered_errors += 1
                self._wrote(blocks, n)
                return self._early_warning
            if s.key == SenseKey.VOLUME_OVERFLOW:
                self._forget_position()
                raise EndOfMediumError(
                    f"{self.name}: write of {n} bytes: {s}", sense=s.raw, residual=s.information
                )
        self._forget_position()
        raise self._error(f"write of {n} bytes", r)

    def _wrote(self, blocks: int, nbytes: int) -> None:
        self._advance(blocks)
        self._stats.bytes_written += nbytes
        self._stats.records_written += blocks

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        r = self._cmd(cdb.write_filemarks6(count, immediate=immediate))
        if not r.good:
            s = r.sense
            if (
                s is not None
                and not s.deferred
                and s.eom
                and s.key
                in (
                    SenseKey.NO_SENSE,
                    SenseKey.RECOVERED_ERROR,
                )
            ):
                self._early_warning = True
            else:
                self._forget_position()
                raise self._error(f"write {count} filemarks", r)
        self._advance(count, count)
        self._stats.filemarks_written += count

    def read_block(self, max_size: int) -> bytes:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        if self._block_size:
            if max_size < self._block_size:
                raise ValueError(
                    f"buffer {max_size} smaller than the block size {self._block_size}"
                )
            if self.quirks.fixed_read_broken:
                note_fallback(self.name, "fixed-mode READ: using variable-mode READs of one block")
                return self._read_variable(self._block_size)
            return self._read_fixed()
        return self._read_variable(max_size)

    def _read_fixed(self) -> bytes:
        size = self._block_size
        r = self._cmd(cdb.read6(1, fixed=True), data_in=size)
        if r.good:
            return self._got(r.data)
        s = r.sense
        if s is not None and s.filemark:
            self._advance(1, 1)
            self._stats.filemarks_read += 1
            raise FilemarkDetected(0)
        if is_end_of_data(s):
            raise BlankCheckError(f"{self.name}: read: end of data", sense=s.raw if s else None)
        if s is not None and s.ili:
            # SSC: a wrong-length block in fixed mode; INFO counts blocks not transferred.
            self._advance(1)
            raise IncorrectLengthError(
                f"{self.name}: read: {s}", sense=s.raw, residual=s.information
            )
        raise self._error("read", r)

    def _read_variable(self, request: int) -> bytes:
        sili = self.quirks.sili
        r = self._cmd(cdb.read6(request, sili=sili), data_in=request)
        if r.good:
            return self._got(r.data)
        s = r.sense
        if s is None:
            raise self._error("read", r)
        if s.filemark:
            self._advance(1, 1)
            self._stats.filemarks_read += 1
            raise FilemarkDetected(0)
        if is_end_of_data(s):
            raise BlankCheckError(f"{self.name}: read: end of data", sense=s.raw)
        if s.ili and s.information is not None:
            record = request - s.information
            if s.information < 0:
                self._advance(1)
                raise IncorrectLengthError(
                    f"{self.name}: record of {record} bytes longer than {request}",
                    record_length=record,
                    sense=s.raw,
                    residual=s.information,
                )
            if record == 0 and self.quirks.space_counts_filemarks:
                # tgt: READ does not move over a zero-length record
                self._check(self._cmd(cdb.space6(1)), "SPACE 1")
                return self._got(b"")
            if len(r.data) >= record:
                return self._got(r.data[:record])
            if self.quirks.short_read_count_bug:
                # tgt < 1.0.94 sent (request - record) bytes: back up and read it exactly.
                note_fallback(self.name, "short read: re-reading with the exact length (tgt bug)")
                self._check(self._cmd(cdb.space6(-1)), "SPACE -1")
                again = self._cmd(cdb.read6(record), data_in=record)
                self._check(again, "re-read")
                return self._got(again.data)
            return self._got(r.data)
        if s.key in (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR):
            if s.key == SenseKey.RECOVERED_ERROR:
                self._stats.recovered_errors += 1
            return self._got(r.data)
        raise self._error("read", r)

    def _got(self, data: bytes) -> bytes:
        self._advance(1)
        self._stats.bytes_read += len(data)
        self._stats.records_read += 1
        return data
