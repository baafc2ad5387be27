"""Reading a tape file (or any binary stream) as one run of bytes, without per-byte work.

Archive readers (pax, tar, cpio) see a `ByteSource`: bytes consumed front to back, with the
record structure of the tape hidden except where a reader asks for it (`location()`, for the
extents of aggregated members). Data is handed out as `memoryview` slices of the records the
drive returned, so copying a member to its destination costs one slice per record.

`MemberStream` is the bounded, read-only file object through which a member's data is
exposed to callers; it is valid until the reader moves on to the next member.
"""

from __future__ import annotations

import abc
import io
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, Protocol

from drivers.formats.errors import FormatError
from drivers.tape import (
    BlankCheckError,
    FilemarkDetected,
    IncorrectLengthError,
    SpaceUnit,
    TapeDrive,
)

#: the largest record a reader agrees to re-read after an incorrect-length error (SSC's limit)
MAX_RECORD = (1 << 24) - 1

_EMPTY = memoryview(b"")

DataCallback = Callable[[memoryview], None]


class Verifier(Protocol):
    """Checks a member's data as it goes by; `finish` raises FormatError on a mismatch."""

    def update(self, view: memoryview) -> None: ...

    def finish(self) -> None: ...


class ByteSource(abc.ABC):
    """Bytes consumed front to back from chunks supplied by `_next_chunk`."""

    def __init__(self) -> None:
        self._view = _EMPTY  # the current chunk
        self._pos = 0  # next unread byte in it
        self._base = 0  # position of _view[0] from the start of the source
        self._index = -1  # number of the current chunk (record) from the start of the source
        self._pending: deque[memoryview] = deque()  # chunks fetched ahead by peek()
        self._ended = False

    @abc.abstractmethod
    def _next_chunk(self) -> memoryview | None:
        """The next non-empty chunk, or None at the end."""

    # -- positions ------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Bytes consumed so far."""
        return self._base + self._pos

    def location(self) -> tuple[int, int]:
        """(chunk number, offset in it) of the next unread byte.

        For a `RecordSource` the chunk number is the record's index from where the source
        started reading.
        """
        if self._pos < len(self._view):
            return self._index, self._pos
        return self._index + 1, 0

    # -- consuming --------------------------------------------------------------------------

    def _fetch(self) -> memoryview | None:
        if self._pending:
            return self._pending.popleft()
        if self._ended:
            return None
        chunk = self._next_chunk()
        if chunk is None:
            self._ended = True
        return chunk

    def _available(self) -> memoryview:
        """The unread bytes of the current chunk, fetching the next one if needed; empty at
        the end."""
        if self._pos < len(self._view):
            return self._view[self._pos :]
        chunk = self._fetch()
        if chunk is None:
            self._base += len(self._view)
            self._view, self._pos = _EMPTY, 0
            return _EMPTY
        self._base += len(self._view)
        self._index += 1
        self._view, self._pos = chunk, 0
        return chunk

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end."""
        parts: list[memoryview] = []
        while n > 0:
            view = self._available()
            if not view:
                break
            k = min(n, len(view))
            parts.append(view[:k])
            self._pos += k
            n -= k
        return b"".join(parts)

    def read_exact(self, n: int, what: str) -> bytes:
        start = self.position
        data = self.read(n)
        if len(data) != n:
            raise FormatError(
                f"truncated {what}: {len(data)} of {n} bytes before the end", offset=start
            )
        return data

    def peek(self, n: int) -> bytes:
        """Up to `n` upcoming bytes, without consuming them."""
        parts = [self._view[self._pos : self._pos + n]]
        have = len(parts[0])
        for chunk in self._pending:
            if have >= n:
                break
            parts.append(chunk[: n - have])
            have += len(parts[-1])
        while have < n and not self._ended:
            chunk = self._next_chunk()
            if chunk is None:
                self._ended = True
                break
            self._pending.append(chunk)
            parts.append(chunk[: n - have])
            have += len(parts[-1])
        return b"".join(parts)

    def copy(self, n: int, dest: BinaryIO | None, on_data: DataCallback | None, what: str) -> None:
        """Pass exactly `n` bytes to `on_data` and `dest`, one slice per chunk."""
        start = self.position
        left = n
        pos, view = self._pos, self._view
        if left and pos < len(view):
            k = min(left, len(view) - pos)
            piece = view[pos : pos + k]
            if on_data is not None:
                on_data(piece)
            if dest is not None:
                _write_all(dest, piece)
            pos += k
            self._pos = pos
            left -= k
        if not left:
            return
        # Whole chunks from here: this loop is the reader's cost per record, so the state
        # lives in locals and is stored back once.
        fetch = self._fetch if self._pending or self._ended else self._next_chunk
        write = dest.write if dest is not None else None
        base, index = self._base, self._index
        try:
            while left:
                chunk = fetch()
                if chunk is None:
                    self._ended = True
                    raise FormatError(
                        f"truncated {what}: {n - left} of {n} bytes before the end", offset=start
                    )
                base += len(view)
                index += 1
                view = chunk
                size = len(chunk)
                if size > left:
                    chunk = chunk[:left]
                    size = left
                if on_data is not None:
                    on_data(chunk)
                if write is not None:
                    done = write(chunk)
                    if done is not None and done < size:
                        _write_all(dest, chunk[done:])  # type: ignore[arg-type]
                left -= size
                pos = size
        finally:
            self._base, self._index, self._view, self._pos = base, index, view, pos

    def skip(self, n: int, what: str) -> None:
        """Consume exactly `n` bytes without looking at them."""
        start = self.position
        left = n
        while left > 0:
            view = self._available()
            if not view:
                raise FormatError(
                    f"truncated {what}: {n - left} of {n} bytes before the end", offset=start
                )
            k = min(left, len(view))
            self._pos += k
            left -= k
            if left and not self._pending:
                left -= self._skip_whole(left)

    def _skip_whole(self, n: int) -> int:
        """Skip up to `n` bytes of whole chunks past the current one without reading them,
        where the source can; return how many were skipped."""
        return 0

    def drain(self) -> None:
        """Consume everything up to the end (for a tape file: to just after its filemark)."""
        self._pos = len(self._view)
        self._pending.clear()
        while self._fetch() is not None:
            pass


def _write_all(dest: BinaryIO, view: memoryview) -> None:
    written = dest.write(view)
    # Buffered files write everything; raw ones may not.
    while written is not None and written < len(view):
        view = view[written:]
        written = dest.write(view)


class StreamSource(ByteSource):
    """A binary stream (a file, a pipe, stdin) read in chunks."""

    def __init__(self, stream: BinaryIO, chunk_size: int = 1 << 20) -> None:
        super().__init__()
        self._stream = stream
        self._chunk_size = chunk_size

    def _next_chunk(self) -> memoryview | None:
        data = self._stream.read(self._chunk_size)
        return memoryview(data) if data else None


class RecordSource(ByteSource):
    """The records of one tape file, from the drive's current position to the filemark.

    `ended_by` says how the tape file ended once the end was reached: "filemark" (the drive
    is then positioned after it) or "eod" (a tape file never closed by a filemark).

    With `fixed_size`, every record but the last is known to be `fixed_size` bytes long,
    which lets `skip` space over whole records instead of reading them.
    """

    def __init__(self, drive: TapeDrive, max_record: int, *, fixed_size: int = 0) -> None:
        super().__init__()
        if max_record <= 0:
            raise ValueError(f"max_record must be positive, not {max_record}")
        self.drive = drive
        self.max_record = max_record
        self.fixed_size = fixed_size
        self.records_read = 0
        self.ended_by: str | None = None
        self.first_record_length: int | None = None  # once read: tells labels from data

    def _next_chunk(self) -> memoryview | None:
        where = self.records_read
        try:
            data = self.drive.read_block(self.max_record)
        except FilemarkDetected:
            self.ended_by = "filemark"
            return None
        except BlankCheckError:
            self.ended_by = "eod"
            return None
        except IncorrectLengthError as e:
            # The drive is after the too-long record: step back and read it whole.
            if e.record_length is None or not 0 < e.record_length <= MAX_RECORD:
                raise FormatError(
                    f"record {where} of the tape file is longer than {self.max_record} bytes"
                    " and the drive did not say how long"
                ) from e
            self.drive.space(-1)
            data = self.drive.read_block(e.record_length)
        if not data:
            raise FormatError(f"record {where} of the tape file is empty")
        if self.records_read == 0:
            self.first_record_length = len(data)
        self.records_read += 1
        return memoryview(data)

    def _skip_whole(self, n: int) -> int:
        size = self.fixed_size
        if not size or self._ended or n < size:
            return 0
        # Stop one record short so that the last partial record is read normally and the
        # source's position stays exact.
        count = n // size
        if n % size == 0:
            count -= 1
        if count <= 0:
            return 0
        try:
            self.drive.space(count, SpaceUnit.BLOCKS)
        except FilemarkDetected as e:
            self.ended_by = "filemark"
            self._ended = True
            self._note_skipped(max(count - e.residual, 0))  # the records before the filemark
            return 0
        except BlankCheckError:
            # Where the drive stopped is unknown to us: the tape file is cut short anyway.
            self.ended_by = "eod"
            self._ended = True
            return 0
        self._note_skipped(count)
        return count * size

    def _note_skipped(self, count: int) -> None:
        self.records_read += count
        self._index += count
        self._base += count * self.fixed_size

    def drain(self) -> None:
        self._pos = len(self._view)
        self._pending.clear()
        if self._ended:
            return
        self._ended = True
        try:
            self.drive.space(1, SpaceUnit.FILEMARKS)
            self.ended_by = "filemark"
        except BlankCheckError:
            self.ended_by = "eod"


class MemberStream(io.RawIOBase):
    """A member's data: exactly `size` bytes from a `ByteSource`, read-only, forward-only.

    Valid until the reader that returned it moves to the next member; reading it afterwards
    raises ValueError (closed file).
    """

    def __init__(
        self, source: ByteSource, size: int, name: str, *, verifier: Verifier | None = None
    ) -> None:
        super().__init__()
        self._source = source
        self._size = size
        self._left = size
        self._name = name
        self._verifier = verifier
        if verifier is not None and size == 0:
            verifier.finish()

    @property
    def size(self) -> int:
        return self._size

    @property
    def remaining(self) -> int:
        return self._left

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        self._checkClosed()
        want = min(len(b), self._left)
        if want == 0:
            return 0
        view = self._source._available()
        if not view:
            raise FormatError(
                f"truncated data of {self._name!r}: {self._size - self._left} of"
                f" {self._size} bytes before the end",
                offset=self._source.position,
            )
        k = min(want, len(view))
        memoryview(b).cast("B")[:k] = view[:k]
        self._source._pos += k
        self._left -= k
        if self._verifier is not None:
            self._verifier.update(view[:k])
            if not self._left:
                self._verifier.finish()
        return k

    def copy_to(self, dest: BinaryIO | None, on_data: DataCallback | None = None) -> int:
        """Copy the rest of the data to `dest` (and `on_data`); return the bytes copied."""
        self._checkClosed()
        n = self._left
        if n == 0:
            return 0
        verifier = self._verifier
        if verifier is not None:
            outer = on_data

            def on_data(view: memoryview) -> None:
                verifier.update(view)
                if outer is not None:
                    outer(view)

        self._source.copy(n, dest, on_data, f"data of {self._name!r}")
        self._left = 0
        if verifier is not None:
            verifier.finish()
        return n

    def _finish(self) -> None:
        """Skip what the caller did not read (still checking it if there is a verifier)
        and close the stream."""
        if not self.closed and self._left:
            if self._verifier is not None:
                self.copy_to(None)
            else:
                self._source.skip(self._left, f"data of {self._name!r}")
                self._left = 0
        self.close()
