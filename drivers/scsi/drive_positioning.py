"""Positioning for `ScsiTapeDrive`: REWIND, READ POSITION, LOCATE, SPACE and end of data.

Each command falls back once where the device lacks it (see `quirks.py`): READ POSITION long
form to short form to the position the driver tracks, LOCATE(16) to LOCATE(10) to
`emulation.EmulatedPositioning` (REWIND + SPACE), and SPACE to one-byte reads where the
device counts filemarks as blocks (tgt).
"""

from __future__ import annotations

from drivers.scsi import cdb, position
from drivers.scsi.classify import (
    BeginningOfMediumError,
    is_beginning_of_medium,
    is_end_of_data,
    is_unsupported,
)
from drivers.scsi.drive_plumbing import DrivePlumbing
from drivers.scsi.emulation import EmulatedPositioning
from drivers.scsi.quirks import note_fallback
from drivers.tape import (
    BlankCheckError,
    FilemarkDetected,
    IllegalRequestError,
    Position,
    RecoverableError,
    SpaceUnit,
)


class DrivePositioning(DrivePlumbing, EmulatedPositioning):
    """Where the tape is and moving it there; keeps the tracked position in step."""

    # None once READ POSITION proved useless: the tracked position answers instead
    _read_position_form: cdb.ReadPositionForm | None
    _locate16: bool

    def rewind(self) -> None:
        self._check(self._cmd(cdb.rewind()), "REWIND")
        self._block, self._file = 0, 0
        self._early_warning = False

    def read_position(self) -> Position:
        form = self._read_position_form
        while form is not None:
            r = self._cmd(cdb.read_position(form), data_in=cdb.read_position_length(form))
            if is_unsupported(r.sense):
                form = self._next_position_form(form, "not supported")
                continue
            self._check(r, "READ POSITION")
            if form is cdb.ReadPositionForm.LONG and position.looks_constant(r.data):
                # A reserved bit and zeros: tgt's canned reply from an LU renamed beyond
                # recognition. A real drive never sets that bit.
                form = self._next_position_form(None, "returns constant data")
                continue
            parsed = (
                position.parse_long(r.data)
                if form is cdb.ReadPositionForm.LONG
                else position.parse_short(r.data)
            )
            if parsed.block is None:
                raise RecoverableError(f"{self.name}: the drive does not know its position")
            self._block, self._file = parsed.block, parsed.file
            if parsed.bpew:
                self._early_warning = True
            return Position(parsed.block, parsed.file)
        if self._block is None:
            raise RecoverableError(
                f"{self.name}: position unknown (the drive cannot report it); rewind or locate"
            )
        return Position(self._block, self._file)

    def _next_position_form(
        self, form: cdb.ReadPositionForm | None, why: str
    ) -> cdb.ReadPositionForm | None:
        nxt = cdb.ReadPositionForm.SHORT if form is cdb.ReadPositionForm.LONG else None
        if nxt is None:
            note_fallback(self.name, f"READ POSITION {why}: tracking the position in the driver")
        else:
            note_fallback(self.name, f"READ POSITION long form {why}: using the short form")
        self._read_position_form = nxt
        return nxt

    def locate(self, block: int) -> None:
        if block < 0:
            raise ValueError("negative block")
        self._early_warning = False
        while self.quirks.locate:
            if self._locate16:
                r = self._cmd(cdb.locate16(block))
                if is_unsupported(r.sense):
                    note_fallback(self.name, "LOCATE(16) not supported: using LOCATE(10)")
                    self._locate16 = False
                    continue
            else:
                if block > 0xFFFFFFFF:
                    raise IllegalRequestError(f"{self.name}: block {block} beyond LOCATE(10)")
                r = self._cmd(cdb.locate10(block))
                if is_unsupported(r.sense):
                    note_fallback(self.name, "LOCATE not supported: emulating it with SPACE")
                    self.quirks = self.quirks.with_(locate=False)
                    break
            if r.check_condition and is_end_of_data(r.sense):
                self._forget_position()
                raise self._error(f"LOCATE {block}", r)
            self._check(r, f"LOCATE {block}")
            self._block, self._file = block, None
            return
        self._emulated_locate(block)

    def space(self, count: int, unit: SpaceUnit = SpaceUnit.BLOCKS) -> None:
        if unit is SpaceUnit.END_OF_DATA:
            self._space_eod()
            return
        if count == 0:
            return
        if self.quirks.space_counts_filemarks:
            self._emulated_space(count, unit)
            return
        code = cdb.SpaceCode.BLOCKS if unit is SpaceUnit.BLOCKS else cdb.SpaceCode.FILEMARKS
        big = not -(1 << 23) <= count < (1 << 23)
        r = self._cmd(cdb.space16(count, code) if big else cdb.space6(count, code))
        if r.good:
            self._advance(count, count if unit is SpaceUnit.FILEMARKS else 0)
            if unit is SpaceUnit.FILEMARKS:
                self._block = None
            return
        s = r.sense
        residual = s.information if s is not None and s.information is not None else 0
        self._forget_position()
        if s is not None and s.filemark and unit is SpaceUnit.BLOCKS:
            raise FilemarkDetected(abs(residual))
        if is_end_of_data(s):
            raise BlankCheckError(
                f"{self.name}: space {count} {unit}: end of data",
                sense=s.raw if s else None,
                residual=residual,
            )
        if is_beginning_of_medium(s):
            raise BeginningOfMediumError(
                f"{self.name}: space {count} {unit}: beginning of tape",
                sense=s.raw if s else None,
                residual=residual,
            )
        self._check(r, f"SPACE {count} {unit}")

    def _space_eod(self) -> None:
        self._early_warning = False
        if self.quirks.space_counts_filemarks:
            self._find_eod("space to end of data")
            return
        r = self._cmd(cdb.space6(0, cdb.SpaceCode.END_OF_DATA))
        self._check(r, "SPACE EOD")
        self._forget_position()
