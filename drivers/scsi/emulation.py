"""Positioning for drives whose own commands cannot be trusted (tgt): LOCATE emulated by
REWIND + SPACE, end of data found by search, block and filemark spacing done with one-byte
reads.

tgt's SPACE counts filemarks as blocks, never reports FILEMARK or a residual, answers NO
SENSE 00/05 both when it lands on end of data and when it stops there early, and is off by
one when spacing filemarks backward; its READ POSITION returns constants. What it does get
right: REWIND, SPACE over N objects from the beginning (GOOD iff N is below the end of data),
and a one-byte READ, which steps over the next object and says what it was (a longer record
transfers nothing, a filemark reports FILEMARK, end of data BLANK CHECK). Everything here is
built from those. `EmulatedPositioning` is mixed into `ScsiTapeDrive` (through
`drive_positioning.DrivePositioning`); it keeps the drive's tracked position (`_block`,
`_file`) up to date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.scsi import cdb
from drivers.scsi.classify import (
    BeginningOfMediumError,
    is_end_of_data,
)
from drivers.scsi.quirks import note_fallback
from drivers.tape import (
    BlankCheckError,
    DriveError,
    FilemarkDetected,
    RecoverableError,
    SpaceUnit,
)

if TYPE_CHECKING:
    from drivers.scsi.device import Result
    from drivers.scsi.quirks import Quirks
    from drivers.tape import TapeError


class EmulatedPositioning:
    """The tgt positioning workarounds of `ScsiTapeDrive`."""

    # provided by ScsiTapeDrive
    name: str
    quirks: Quirks
    _block: int | None
    _file: int | None

    if TYPE_CHECKING:

        def _cmd(self, cdb_bytes: bytes, *, data_in: int = 0) -> Result: ...
        def _check(self, result: Result, what: str) -> Result: ...
        def _error(self, what: str, result: Result) -> TapeError: ...
        def _advance(self, objects: int, filemarks: int = 0) -> None: ...
        def rewind(self) -> None: ...

    def _emulated_locate(self, block: int) -> None:
        note_fallback(self.name, "locate: REWIND + SPACE (no LOCATE command)")
        self.rewind()
        if block == 0:
            return
        if not self.quirks.space_counts_filemarks:
            self._space_objects_standard(block)
            self._block, self._file = block, None
            return
        # tgt's SPACE blocks counts every object and answers NO SENSE 00/05 when it lands on
        # or stops at EOD, without a residual. Space one short, then the last one: landing
        # on EOD with the last step is a success (the target is EOD itself).
        if block > 1:
            r = self._cmd(cdb.space6(block - 1))
            if r.check_condition and is_end_of_data(r.sense):
                self._find_eod("locate beyond end of data")
                raise BlankCheckError(f"{self.name}: locate {block}: beyond end of data")
            self._check(r, f"SPACE {block - 1}")
        r = self._cmd(cdb.space6(1))
        if not (r.check_condition and is_end_of_data(r.sense)):
            self._check(r, "SPACE 1")
        self._block, self._file = block, None

    def _space_objects_standard(self, count: int) -> None:
        """Space forward `count` logical objects on an SSC drive (filemarks stop a block
        space; step over each one and go on)."""
        left = count
        while left > 0:
            r = self._cmd(cdb.space6(min(left, (1 << 23) - 1)))
            if r.good:
                left -= min(left, (1 << 23) - 1)
                continue
            s = r.sense
            if s is not None and s.filemark:
                spaced = min(left, (1 << 23) - 1) - (s.information or 0)
                left -= spaced + 1
                continue
            raise self._error("SPACE", r)

    def _find_eod(self, why: str) -> int:
        """tgt: the object number of EOD, by exponential then binary search with REWIND +
        SPACE (GOOD iff the count is below EOD's number); leaves the tape at EOD."""
        note_fallback(self.name, f"{why}: finding end of data by search (no READ POSITION)")

        def below_eod(n: int) -> bool:
            self._check(self._cmd(cdb.rewind()), "REWIND")
            if n == 0:
                return True
            r = self._cmd(cdb.space6(n))
            if r.check_condition and is_end_of_data(r.sense):
                return False
            self._check(r, f"SPACE {n}")
            return True

        lo, hi = 0, 1  # invariant: lo < EOD, answer in (lo, hi]
        while below_eod(hi):
            lo, hi = hi, min(hi * 2, (1 << 23) - 1)
            if lo == hi:
                raise DriveError(f"{self.name}: end of data beyond SPACE(6) range")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if below_eod(mid):
                lo = mid
            else:
                hi = mid
        # Leave the tape at EOD (object `hi`).
        self._check(self._cmd(cdb.rewind()), "REWIND")
        r = self._cmd(cdb.space6(hi))
        if not (r.check_condition and is_end_of_data(r.sense)):
            self._check(r, f"SPACE {hi}")
        self._block, self._file = hi, None
        return hi

    # tgt emulation: one-byte READs tell what the next object is and step over it (a record
    # longer than the request transfers nothing on tgt; a filemark reports FILEMARK).

    def _probe(self) -> str:
        """Step over the next object: 'block', 'filemark' or 'eod' (not moved)."""
        r = self._cmd(cdb.read6(1), data_in=1)
        if r.good:
            self._advance(1)
            return "block"
        s = r.sense
        if s is not None and s.filemark:
            self._advance(1, 1)
            return "filemark"
        if is_end_of_data(s):
            return "eod"
        if s is not None and s.ili:
            if s.information == 1:
                # a zero-length record: tgt does not move over it on READ
                self._check(self._cmd(cdb.space6(1)), "SPACE 1")
            self._advance(1)
            return "block"
        raise self._error("read (probe)", r)

    def _emulated_space(self, count: int, unit: SpaceUnit) -> None:
        note_fallback(self.name, "space: emulated with reads (SPACE counts filemarks as blocks)")
        if self._block is None:
            raise RecoverableError(f"{self.name}: position unknown; rewind or locate first")
        if count > 0:
            done = 0
            while done < count:
                what = self._probe()
                if what == "eod":
                    raise BlankCheckError(f"{self.name}: space: end of data", residual=count - done)
                if what == "filemark":
                    if unit is SpaceUnit.BLOCKS:
                        raise FilemarkDetected(count - done)
                    done += 1
                elif unit is SpaceUnit.BLOCKS:
                    done += 1
            return
        # Backward: find the objects between the target and here by reading them forward.
        start, file_at_start = self._block, self._file
        want = -count
        if unit is SpaceUnit.BLOCKS:
            lo = max(0, start - want)
            self._emulated_locate(lo)
            marks = [i for i in range(lo, start) if self._probe() == "filemark"]
            if marks:
                # Reverse block spacing stops on the BOP side of the first filemark met.
                stop = marks[-1]
                self._emulated_locate(stop)
                self._file = file_at_start - 1 if file_at_start is not None else None
                raise FilemarkDetected(want - (start - stop - 1))
            self._emulated_locate(lo)
            self._file = file_at_start
            if start - want < 0:
                raise BeginningOfMediumError(
                    f"{self.name}: space: beginning of tape", residual=want - start
                )
            return
        # Filemarks backward: scan from BOT (the tape's layout before here is needed).
        self._emulated_locate(0)
        marks = [i for i in range(start) if self._probe() == "filemark"]
        if len(marks) < want:
            self._emulated_locate(0)
            self._file = 0
            raise BeginningOfMediumError(
                f"{self.name}: space: beginning of tape", residual=want - len(marks)
            )
        target = marks[-want]
        self._emulated_locate(target)
        self._file = len(marks) - want
