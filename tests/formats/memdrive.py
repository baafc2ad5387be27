"""An in-memory `TapeDrive` for the format tests: a list of records and filemarks.

Pure logic, so allowed as a stand-in: the format code only needs SSC's sequential
semantics (records, filemarks, end of data, early warning, locate by logical object), which
this models. `write_block` copies the caller's buffer, as a real drive's DMA does, so tests
catch a writer that hands out a buffer it later reuses.

Errors are injected with `fail_write_at` / `fail_read_at` (logical object number to the
exception raised when writing or reading there) and `capacity` (bytes; past it
`EndOfMediumError`).
"""

from __future__ import annotations

from drivers.tape import (
    BlankCheckError,
    DriveStatus,
    EndOfMediumError,
    FilemarkDetected,
    IllegalRequestError,
    IncorrectLengthError,
    NotReadyError,
    Position,
    SpaceUnit,
    TapeDrive,
)

FILEMARK = None  # a filemark in `objects`


class MemDrive(TapeDrive):
    def __init__(
        self,
        *,
        early_warning_after: int | None = None,
        capacity: int | None = None,
        block_size: int = 0,
        name: str = "mem0",
    ) -> None:
        self.name = name
        self.serial = f"MEM-{name}"
        self.objects: list[bytes | None] = []
        self.pos = 0
        self.block_size = block_size
        self.early_warning_after = early_warning_after
        self.capacity = capacity
        self.loaded = True
        self.fail_write_at: dict[int, Exception] = {}
        self.fail_read_at: dict[int, Exception] = {}
        self.syncs = 0  # non-immediate write_filemarks calls
        self.write_calls = 0
        self.read_calls = 0
        self.space_calls: list[tuple[int, SpaceUnit]] = []

    # -- helpers for tests --------------------------------------------------------------

    def bytes_written(self) -> int:
        return sum(len(o) for o in self.objects if o is not None)

    def tape_file(self, n: int) -> list[bytes]:
        """The records of tape file `n` (after the n-th filemark)."""
        files: list[list[bytes]] = [[]]
        for o in self.objects:
            if o is FILEMARK:
                files.append([])
            else:
                files[-1].append(o)
        return files[n]

    def file_start(self, n: int) -> int:
        """The logical object number where tape file `n` starts."""
        if n == 0:
            return 0
        seen = 0
        for i, o in enumerate(self.objects):
            if o is FILEMARK:
                seen += 1
                if seen == n:
                    return i + 1
        raise IndexError(n)

    # -- TapeDrive ------------------------------------------------------------------------

    def _ready(self) -> None:
        if not self.loaded:
            raise NotReadyError("no cartridge")

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.pos = 0
        self.loaded = False

    def rewind(self) -> None:
        self._ready()
        self.pos = 0

    def locate(self, block: int) -> None:
        self._ready()
        if block < 0:
            raise IllegalRequestError(f"locate to {block}")
        if block > len(self.objects):
            self.pos = len(self.objects)
            raise BlankCheckError(f"locate to {block} beyond end of data {len(self.objects)}")
        self.pos = block

    def read_position(self) -> Position:
        self._ready()
        return Position(self.pos, sum(1 for o in self.objects[: self.pos] if o is FILEMARK))

    def set_block_size(self, size: int) -> None:
        self.block_size = size

    def write_block(self, data) -> bool:
        self._ready()
        self.write_calls += 1
        if self.pos in self.fail_write_at:
            raise self.fail_write_at.pop(self.pos)
        if self.block_size and len(data) != self.block_size:
            raise IllegalRequestError(f"{len(data)}-byte record in {self.block_size}-byte mode")
        del self.objects[self.pos :]
        used = self.bytes_written()
        if self.capacity is not None and used + len(data) > self.capacity:
            raise EndOfMediumError("physical end of medium")
        self.objects.append(bytes(data))
        self.pos += 1
        return self.early_warning_after is not None and used + len(data) > self.early_warning_after

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        self._ready()
        del self.objects[self.pos :]
        self.objects.extend([FILEMARK] * count)
        self.pos += count
        if not immediate:
            self.syncs += 1

    def read_block(self, max_size: int) -> bytes:
        self._ready()
        self.read_calls += 1
        if self.pos in self.fail_read_at:
            raise self.fail_read_at.pop(self.pos)
        if self.pos >= len(self.objects):
            raise BlankCheckError("end of data")
        o = self.objects[self.pos]
        self.pos += 1
        if o is FILEMARK:
            raise FilemarkDetected()
        if len(o) > max_size:
            raise IncorrectLengthError(
                f"{len(o)}-byte record, {max_size}-byte buffer",
                record_length=len(o),
                residual=max_size - len(o),
            )
        return o

    def space(self, count: int, unit: SpaceUnit = SpaceUnit.BLOCKS) -> None:
        self._ready()
        self.space_calls.append((count, unit))
        if unit == SpaceUnit.END_OF_DATA:
            self.pos = len(self.objects)
            return
        step = 1 if count > 0 else -1
        done = 0
        while done < abs(count):
            if step > 0 and self.pos >= len(self.objects):
                raise BlankCheckError("end of data", residual=abs(count) - done)
            if step < 0 and self.pos == 0:
                raise IllegalRequestError("beginning of tape")
            o = self.objects[self.pos if step > 0 else self.pos - 1]
            self.pos += step
            if unit == SpaceUnit.BLOCKS and o is FILEMARK:
                raise FilemarkDetected(abs(count) - done)
            if unit == SpaceUnit.FILEMARKS and o is not FILEMARK:
                continue
            done += 1

    def status(self) -> DriveStatus:
        return DriveStatus(
            ready=self.loaded,
            loaded=self.loaded,
            block_size=self.block_size,
            position=self.read_position() if self.loaded else None,
        )

    def remaining_capacity(self) -> int | None:
        if self.capacity is None:
            return None
        return max(self.capacity - self.bytes_written(), 0)

    def alerts(self) -> frozenset[int]:
        return frozenset()
