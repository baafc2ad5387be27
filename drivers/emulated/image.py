"""The tape image of one cartridge, format version 1: a payload file and an index file.

``BARCODE.tape`` holds the records' payloads back to back and nothing else, so that 256 KiB
records are written exactly as `dd` would write them (from offset 0, page-aligned, one
`pwrite` each, straight from the caller's buffer). ``BARCODE.index`` holds the cartridge
header (magic ``REELTAPE``, version, capacity, barcode, ...), the index state, and one
16-byte entry per logical object (record or filemark) giving its kind and where its payload
ends. The drive keeps the index memory-mapped, so recording a record costs a store into
shared memory, not a system call, and survives the death of the process as the payload does.
man/reelfs-emulated.5 has the byte-level description.

Crash rules, which make a torn record read as end of data:

* An entry is stored only after its payload was written; an entry is valid only if its
  CRC (over its object number, kind and end offset) matches and its payload lies within the
  payload file. Loading stops at the first invalid entry: that is end of data.
* `sync()` (the drive's sync points) makes the payloads durable, then records in the index
  state how many objects are durable, then makes the index durable. The index state also
  carries the boot id of the writer: after a reboot (power loss), entries past the durable
  count are not trusted, since their payload may never have reached the disk.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from drivers.emulated.layout import FILE_MODE
from drivers.tape import DriveError, MediaError, NotReadyError

MAGIC = b"REELTAPE"
VERSION = 1
INDEX_SUFFIX = ".index"
FLAG_CLEANING = 1

# The index file: cartridge header at 0, index state at 512, entries from 1024.
CARTRIDGE_HEADER_SIZE = 512
STATE_AT = 512
ENTRIES_AT = 1024
ENTRY_SIZE = 16

# magic, version, entries offset, flags, capacity, early warning, cleaning uses, cleaning
# limit, barcode (NUL-padded), creation time in ns; a CRC-32 of bytes 0..507 sits at 508.
_HEADER = struct.Struct("<8sHHIQQII16sQ")
_HEADER_CRC_AT = 508
# magic, entry size, 6 reserved, boot id of the last writer, durable object count
STATE_MAGIC = b"REELINDX"
_STATE = struct.Struct("<8sH6x16sQ")
# kind, 3 reserved, CRC-32, end of the object's payload in the payload file
_ENTRY = struct.Struct("<B3xIQ")
# what the CRC covers: object number, kind, end
_ENTRY_CRC = struct.Struct("<QBQ")
_INDEX_GROWTH = 4096  # entries added to the mapping at a time (then doubling)

KIND_RECORD = 1
KIND_FILEMARK = 2
MAX_RECORD = (1 << 24) - 1  # SSC's largest variable-length record
#: bytes of capacity each record or filemark costs on top of its payload (gaps, headers)
OBJECT_OVERHEAD = 32


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))[:16].ljust(16, b"\0")
    except (OSError, ValueError):
        return bytes(16)  # unknown: every boot looks the same, entries are trusted


BOOT_ID = _boot_id()


@dataclass
class CartridgeHeader:
    """The facts of a cartridge its index file opens with: barcode, capacity, cleaning."""

    barcode: str
    capacity: int
    early_warning: int
    cleaning: bool = False
    cleaning_uses: int = 0
    cleaning_limit: int = 0
    created_ns: int = 0

    def pack(self) -> bytes:
        head = _HEADER.pack(
            MAGIC,
            VERSION,
            ENTRIES_AT,
            FLAG_CLEANING if self.cleaning else 0,
            self.capacity,
            self.early_warning,
            self.cleaning_uses,
            self.cleaning_limit,
            self.barcode.encode("ascii"),
            self.created_ns,
        )
        body = head.ljust(_HEADER_CRC_AT, b"\0")
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, raw: bytes, where: Path) -> CartridgeHeader:
        if len(raw) < _HEADER_CRC_AT + 4 or raw[:8] != MAGIC:
            raise MediaError(f"{where} is not a tape index (bad magic)", alerts=(4,))
        (crc,) = struct.unpack_from("<I", raw, _HEADER_CRC_AT)
        if zlib.crc32(raw[:_HEADER_CRC_AT]) != crc:
            raise MediaError(f"{where}: cartridge header checksum mismatch", alerts=(4,))
        _, version, size, flags, cap, ew, uses, limit, barcode, created = _HEADER.unpack_from(raw)
        if version != VERSION or size != ENTRIES_AT:
            raise MediaError(
                f"{where}: tape image version {version} (entries at {size}) is not supported;"
                f" this reelfs reads version {VERSION}",
                alerts=(4,),
            )
        return cls(
            barcode=barcode.rstrip(b"\0").decode("ascii"),
            capacity=cap,
            early_warning=ew,
            cleaning=bool(flags & FLAG_CLEANING),
            cleaning_uses=uses,
            cleaning_limit=limit,
            created_ns=created,
        )


def index_path(tape: Path) -> Path:
    return tape.with_suffix(INDEX_SUFFIX)


def _state(synced: int, boot: bytes = BOOT_ID) -> bytes:
    return _STATE.pack(STATE_MAGIC, ENTRY_SIZE, boot, synced)


def create_image(path: Path, header: CartridgeHeader) -> None:
    """Write a blank cartridge (an empty payload file and its index) at `path`, durably;
    never overwrites."""
    if not header.created_ns:
        header.created_ns = time.time_ns()
    index = header.pack().ljust(STATE_AT, b"\0") + _state(0)
    for name, data in ((path, b""), (index_path(path), index.ljust(ENTRIES_AT, b"\0"))):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_header(path: Path) -> CartridgeHeader:
    """The cartridge header of the tape image at `path` (the payload file's path)."""
    with open(index_path(path), "rb") as f:
        return CartridgeHeader.unpack(f.read(CARTRIDGE_HEADER_SIZE), index_path(path))


def _lock(fd: int, path: Path) -> None:
    try:
        # A cartridge is in one drive at a time; this catches two processes driving the
        # same tape (a second daemon on the same library).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise NotReadyError(f"tape image {path.name} is in use by another process") from None


def _entry(number: int, kind: int, end: int) -> tuple[int, int, int]:
    return kind, zlib.crc32(_ENTRY_CRC.pack(number, kind, end)), end


class TapeImage:
    """An open tape image with its index. Positions are object numbers (0 = BOT)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self._index_fd = -1
        self._map: mmap.mmap | None = None
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            _lock(self.fd, path)
            # ends[i] is where object i's payload starts, ends[count] the end of data.
            self.ends = array("q", [0])
            self.kinds = bytearray()
            self.filemarks = array("q")  # object numbers of the filemarks, ascending
            self.synced = 0
            self.file_end = os.fstat(self.fd).st_size
            self._open_index()
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except FileNotFoundError as e:
            self.close()
            raise MediaError(
                f"tape image {Path(e.filename).name} is missing; the tape cannot be read",
                alerts=(4,),
            ) from None
        except BaseException:
            self.close()
            raise

    # -- the index ------------------------------------------------------------------------

    def _open_index(self) -> None:
        ipath = index_path(self.path)
        self._index_fd = os.open(ipath, os.O_RDWR | os.O_CLOEXEC)
        raw = os.pread(self._index_fd, ENTRIES_AT, 0)
        self.header = CartridgeHeader.unpack(raw, ipath)
        if len(raw) < ENTRIES_AT or raw[STATE_AT : STATE_AT + 8] != STATE_MAGIC:
            raise MediaError(f"{ipath.name}: the index state is damaged", alerts=(4,))
        _, entry_size, boot, synced = _STATE.unpack_from(raw, STATE_AT)
        if entry_size != ENTRY_SIZE:
            raise MediaError(f"{ipath.name}: unsupported entry size {entry_size}", alerts=(4,))
        self._map = mmap.mmap(self._index_fd, os.fstat(self._index_fd).st_size)
        # Written in this boot: what is in the page cache is as good as on disk. Written in
        # an earlier boot: only what was made durable can be trusted.
        trusted = None if boot == BOOT_ID else synced
        count = self._scan(trusted)
        self.synced = min(synced, count)
        # Forget what lies past end of data, so that nothing there can come back later.
        self._resize_index(count)
        self._resize_index(count + _INDEX_GROWTH)
        self._map_state()

    def _scan(self, trusted: int | None) -> int:
        assert self._map is not None
        ends, kinds, filemarks = self.ends, self.kinds, self.filemarks
        limit = (len(self._map) - ENTRIES_AT) // ENTRY_SIZE
        if trusted is not None:
            limit = min(limit, trusted)
        view = memoryview(self._map)[ENTRIES_AT : ENTRIES_AT + limit * ENTRY_SIZE]
        entries = _ENTRY.iter_unpack(view)
        try:
            end = 0
            for number, (kind, crc, new_end) in enumerate(entries):
                if kind == KIND_RECORD:
                    if not end < new_end <= min(end + MAX_RECORD, self.file_end):
                        break
                elif kind != KIND_FILEMARK or new_end != end:
                    break
                if crc != zlib.crc32(_ENTRY_CRC.pack(number, kind, new_end)):
                    break
                kinds.append(kind)
                if kind == KIND_FILEMARK:
                    filemarks.append(number)
                ends.append(new_end)
                end = new_end
        finally:
            del entries  # it holds the mapping's buffer, which must be free to resize
            view.release()
        return len(kinds)

    def _resize_index(self, entries: int) -> None:
        assert self._map is not None
        self._map.resize(ENTRIES_AT + entries * ENTRY_SIZE)

    def _store(self, number: int, kind: int, end: int) -> None:
        mapping = self._map
        assert mapping is not None
        at = ENTRIES_AT + number * ENTRY_SIZE
        if at + ENTRY_SIZE > len(mapping):
            self._resize_index(2 * number + _INDEX_GROWTH)
        _ENTRY.pack_into(mapping, at, *_entry(number, kind, end))

    @property
    def count(self) -> int:
        """Number of logical objects; this is the end-of-data position."""
        return len(self.kinds)

    def used(self, position: int) -> int:
        """Capacity used before `position`: payloads plus the per-object overhead."""
        return self.ends[position] + OBJECT_OVERHEAD * position

    def is_filemark(self, position: int) -> bool:
        return self.kinds[position] == KIND_FILEMARK

    def record_length(self, position: int) -> int:
        return self.ends[position + 1] - self.ends[position]

    def filemarks_before(self, position: int) -> int:
        return bisect_left(self.filemarks, position)

    # -- data -----------------------------------------------------------------------------

    def read_record(self, position: int) -> bytes:
        length = self.ends[position + 1] - self.ends[position]
        data = os.pread(self.fd, length, self.ends[position])
        if len(data) != length:
            raise MediaError(
                f"{self.path.name}: record {position} is short ({len(data)} of {length} bytes);"
                " the image was changed underneath the drive",
                alerts=(4, 5),
            )
        return data

    def _cut(self, position: int) -> None:
        """Make `position` the end of data: what follows is gone. Every write starts here."""
        if position < self.count:
            del self.ends[position + 1 :]
            del self.kinds[position:]
            del self.filemarks[bisect_left(self.filemarks, position) :]
            self._resize_index(position)  # drops the entries for good
            self._resize_index(position + _INDEX_GROWTH)
            if position < self.synced:
                # Durable objects are about to be overwritten: say so durably first, or a
                # power loss could pair old entries with new payload.
                self.synced = position
                self._map_state()
                os.fdatasync(self._index_fd)
        end = self.ends[position]
        if self.file_end != end:
            os.ftruncate(self.fd, end)  # a torn record, or what was cut
            self.file_end = end

    def write_record(self, position: int, data: memoryview) -> None:
        """Write a record at `position`, which becomes the new end of data."""
        if position != len(self.kinds) or self.file_end != self.ends[position]:
            self._cut(position)
        start = self.ends[position]
        length = data.nbytes
        self._pwrite(data, length, start)
        end = start + length
        self.file_end = end
        self._store(position, KIND_RECORD, end)
        self.kinds.append(KIND_RECORD)
        self.ends.append(end)

    def _pwrite(self, data: memoryview, length: int, start: int) -> None:
        try:
            done = os.pwrite(self.fd, data, start)
            while done < length:  # a short write: rare on a regular file, but legal
                n = os.pwrite(self.fd, data[done:], start + done)
                if n == 0:
                    raise OSError(28, os.strerror(28))
                done += n
        except OSError as e:
            # Leave the image as it was: a record is either whole or absent.
            os.ftruncate(self.fd, start)
            self.file_end = start
            raise DriveError(
                f"{self.path.name}: cannot write the tape image: {e.strerror or e}"
            ) from e

    def write_filemarks(self, position: int, count: int) -> None:
        self._cut(position)
        end = self.ends[position]
        for i in range(count):
            self._store(position + i, KIND_FILEMARK, end)
            self.kinds.append(KIND_FILEMARK)
            self.filemarks.append(position + i)
            self.ends.append(end)

    def _map_state(self) -> None:
        assert self._map is not None
        self._map[STATE_AT : STATE_AT + _STATE.size] = _state(self.synced)

    def sync(self) -> None:
        """Make every object written so far durable: payloads first, then the index."""
        os.fdatasync(self.fd)
        if self.synced != self.count:
            self.synced = self.count
            self._map_state()
        os.fdatasync(self._index_fd)

    def update_header(self, header: CartridgeHeader) -> None:
        assert self._map is not None
        self._map[:CARTRIDGE_HEADER_SIZE] = header.pack()
        os.fdatasync(self._index_fd)
        self.header = header

    def close(self) -> None:
        """Release the image; the index file is trimmed to its entries (not a sync)."""
        if self._map is not None:
            try:
                self._resize_index(self.count)
            finally:
                self._map.close()
                self._map = None
        for attr in ("_index_fd", "fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
