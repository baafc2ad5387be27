"""An emulated SSC tape drive working on the tape image the changer put into its element.

The drive keeps nothing of its own between processes: whether a cartridge is in it and
whether it is threaded lives in the changer state, so a process that finds a drive loaded
after a crash can carry on (the tape is then at BOT) or unload it. The position and the
record index live in memory while the image is open.
"""

from __future__ import annotations

from drivers.emulated.faults import Fault, FaultWatcher, consume, remove_faults
from drivers.emulated.image import MAX_RECORD, OBJECT_OVERHEAD, TapeImage
from drivers.emulated.layout import Description, DriveDescription, LibraryDir
from drivers.emulated.state import read_state, write_state
from drivers.tape import (
    BeginningOfMediumError,
    BlankCheckError,
    DriveError,
    DriveStatus,
    EndOfMediumError,
    FilemarkDetected,
    IllegalRequestError,
    IncorrectLengthError,
    MediaError,
    NotReadyError,
    Position,
    SpaceUnit,
    TapeDrive,
    TapeError,
    WriteProtectedError,
)

# TapeAlert flags (SSC-3 Annex A) this drive raises.
TA_WRITE_PROTECT = 9
TA_MEDIA = 4
TA_READ_FAILURE = 5
TA_WRITE_FAILURE = 6
TA_CLEAN_NOW = 20
TA_EXPIRED_CLEANING_MEDIA = 22
TA_HARDWARE_A = 30

_COUNTERS = (
    "bytes_written",
    "records_written",
    "filemarks_written",
    "bytes_read",
    "records_read",
    "filemarks_read",
    "write_errors",
    "read_errors",
    "drive_errors",
)


class EmulatedDrive(TapeDrive):
    """An SSC tape drive of an emulated library, reading and writing the tape images."""

    def __init__(self, lib: LibraryDir, desc: Description, drive: DriveDescription) -> None:
        self.name = drive.name
        self.serial = drive.serial
        self.address = drive.address
        self._lib = lib
        self._desc = desc
        self._faults = FaultWatcher(lib)
        self._image: TapeImage | None = None
        self._barcode: str | None = None
        self._pos = 0
        self._block_size = 0
        self._alerts: set[int] = set()
        self._cleaning_result = ""
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    def __repr__(self) -> str:
        return f"<EmulatedDrive {self.name} at {self.address} ({self._barcode or 'empty'})>"

    # -- faults ---------------------------------------------------------------------------

    def _check_faults(self, op: str, position: int | None = None) -> None:
        """Raise the error an injected fault calls for on this command, if any."""
        faults = self._faults.current()
        if not faults:
            return
        barcode = self._barcode
        if op == "write" and any(f.kind == "write_protect" and f.volume == barcode for f in faults):
            self._stats["write_errors"] += 1
            self._alerts.add(TA_WRITE_PROTECT)
            raise WriteProtectedError(
                f"{self.name}: volume {barcode} is write-protected", alerts=(TA_WRITE_PROTECT,)
            )
        for f in faults:
            if (
                f.kind == "drive"
                and (f.drive is None or f.drive == self.name)
                and f.matches_op(op)
                and consume(self._lib, f)
            ):
                self._stats["drive_errors"] += 1
                self._alerts.add(TA_HARDWARE_A)
                raise DriveError(
                    f"{self.name}: hardware failure during {op} (injected fault {f.id})",
                    alerts=(TA_HARDWARE_A,),
                )
        if position is None or op not in ("read", "write"):
            return
        for f in faults:
            if (
                f.kind == "media"
                and f.volume == barcode
                and f.block == position
                and f.matches_op(op)
                and consume(self._lib, f)
            ):
                self._media_error(f, op, position)

    def _media_error(self, fault: Fault, op: str, position: int) -> None:
        flag = TA_READ_FAILURE if op == "read" else TA_WRITE_FAILURE
        self._stats[f"{op}_errors"] += 1
        self._alerts.update((TA_MEDIA, flag))
        raise MediaError(
            f"{self.name}: unrecovered {op} error at block {position} of {self._barcode}"
            f" (injected fault {fault.id})",
            alerts=(TA_MEDIA, flag),
        )

    # -- the medium -----------------------------------------------------------------------

    def _medium(self) -> TapeImage:
        """The loaded tape; adopts one a previous process loaded and did not unload."""
        if self._image is not None:
            return self._image
        occupant = read_state(self._lib).elements.get(self.address)
        if occupant is None:
            raise NotReadyError(f"{self.name}: no cartridge in the drive")
        if not occupant.loaded:
            raise NotReadyError(
                f"{self.name}: cartridge {occupant.barcode} is in the drive but not loaded"
            )
        self._open(occupant.barcode)
        assert self._image is not None
        return self._image

    def _open(self, barcode: str) -> None:
        image = TapeImage(self._lib.tape(barcode))
        if image.header.barcode != barcode:
            image.close()
            raise MediaError(
                f"{self.name}: cartridge labelled {barcode} holds the image of"
                f" {image.header.barcode}",
                alerts=(TA_MEDIA,),
            )
        self._image = image
        self._barcode = barcode
        self._pos = 0

    def _data_medium(self) -> TapeImage:
        image = self._medium()
        if image.header.cleaning:
            raise IllegalRequestError(
                f"{self.name}: {self._barcode} is a cleaning cartridge; it holds no data"
                " (unload it)"
            )
        return image

    # -- load and unload ------------------------------------------------------------------

    def load(self) -> None:
        self._check_faults("load")
        if self._image is not None:
            self._pos = 0
            return
        with self._lib.locked():
            state = read_state(self._lib)
            occupant = state.elements.get(self.address)
            if occupant is None:
                raise NotReadyError(
                    f"{self.name}: no cartridge in the drive (move one to element"
                    f" {self.address} first)"
                )
            barcode, threaded_before = occupant.barcode, occupant.loaded
            if not threaded_before:
                # Threaded from now on, so the changer keeps its hands off while the
                # (possibly long) index scan runs outside the lock.
                occupant.loaded = True
                write_state(self._lib, state)
        try:
            self._open(barcode)
        except BaseException:
            if not threaded_before:
                self._set_loaded(barcode, False)
            raise
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._cleaning_result = ""
        assert self._image is not None
        if self._image.header.cleaning:
            self._clean(self._image)

    def _set_loaded(self, barcode: str, loaded: bool) -> None:
        with self._lib.locked():
            state = read_state(self._lib)
            occupant = state.elements.get(self.address)
            if occupant is not None and occupant.barcode == barcode:
                occupant.loaded = loaded
                write_state(self._lib, state)

    def _clean(self, image: TapeImage) -> None:
        header = image.header
        if header.cleaning_uses >= header.cleaning_limit:
            self._alerts.add(TA_EXPIRED_CLEANING_MEDIA)
            self._cleaning_result = (
                f"cleaning cartridge {header.barcode} expired"
                f" ({header.cleaning_uses} of {header.cleaning_limit} uses); nothing cleaned"
            )
            return
        header.cleaning_uses += 1
        image.update_header(header)
        remove_faults(self._lib, lambda f: f.kind == "clean" and f.drive == self.name)
        self._alerts.discard(TA_CLEAN_NOW)
        self._cleaning_result = (
            f"cleaned with {header.barcode} (use {header.cleaning_uses} of {header.cleaning_limit})"
        )

    def unload(self) -> None:
        self._check_faults("unload")
        if self._image is None:
            occupant = read_state(self._lib).elements.get(self.address)
            if occupant is not None and occupant.loaded:
                # Loaded by a process that is gone (or still using it: then this raises).
                try:
                    self._open(occupant.barcode)
                except MediaError:
                    pass  # a damaged cartridge can still be ejected
        if self._image is not None:
            self._image.sync()  # a drive writes out its buffer before it ejects
        with self._lib.locked():
            state = read_state(self._lib)
            occupant = state.elements.get(self.address)
            if occupant is None:
                self._close_image()
                raise NotReadyError(f"{self.name}: no cartridge to unload")
            if occupant.loaded:
                occupant.loaded = False
                write_state(self._lib, state)
        self._close_image()

    def _close_image(self) -> None:
        if self._image is not None:
            self._image.close()
            self._image = None
        self._barcode = None
        self._pos = 0

    def close(self) -> None:
        """Release the image; the cartridge stays loaded, as when a host goes away."""
        self._close_image()

    # -- positioning ----------------------------------------------------------------------

    def rewind(self) -> None:
        self._check_faults("locate")
        self._medium()
        self._pos = 0

    def locate(self, block: int) -> None:
        self._check_faults("locate")
        image = self._data_medium()
        if block < 0:
            raise IllegalRequestError(f"{self.name}: cannot locate to block {block}")
        if block > image.count:
            self._pos = image.count
            raise BlankCheckError(
                f"{self.name}: block {block} is past end of data (block {image.count})"
            )
        self._pos = block

    def read_position(self) -> Position:
        image = self._data_medium()
        return Position(self._pos, image.filemarks_before(self._pos))

    def space(self, count: int, unit: SpaceUnit = SpaceUnit.BLOCKS) -> None:
        self._check_faults("locate")
        image = self._data_medium()
        try:
            unit = SpaceUnit(unit)
        except ValueError:
            raise IllegalRequestError(f"{self.name}: cannot space over {unit!r}") from None
        if unit == SpaceUnit.END_OF_DATA:
            self._pos = image.count
        elif count == 0:
            return
        elif unit == SpaceUnit.BLOCKS:
            self._space_blocks(image, count)
        else:
            self._space_filemarks(image, count)

    def _space_blocks(self, image: TapeImage, count: int) -> None:
        pos, marks = self._pos, image.filemarks
        i = image.filemarks_before(pos)  # marks[i] is the first filemark at or after pos
        if count > 0:
            target = pos + count
            if i < len(marks) and marks[i] < target:
                self._pos = marks[i] + 1
                raise FilemarkDetected(count - (marks[i] - pos))
            if target > image.count:
                self._pos = image.count
                raise BlankCheckError(
                    f"{self.name}: end of data after {image.count - pos} of {count} blocks",
                    residual=count - (image.count - pos),
                )
            self._pos = target
            return
        back = -count
        target = pos - back
        if i > 0 and marks[i - 1] >= target:
            # SSC: stop on the beginning-of-tape side of the filemark.
            self._pos = marks[i - 1]
            raise FilemarkDetected(back - (pos - marks[i - 1] - 1))
        if target < 0:
            self._pos = 0
            raise BeginningOfMediumError(
                f"{self.name}: beginning of tape after {pos} of {back} blocks",
                residual=back - pos,
            )
        self._pos = target

    def _space_filemarks(self, image: TapeImage, count: int) -> None:
        marks = image.filemarks
        i = image.filemarks_before(self._pos)
        if count > 0:
            j = i + count - 1
            if j < len(marks):
                self._pos = marks[j] + 1
                return
            self._pos = image.count
            raise BlankCheckError(
                f"{self.name}: end of data after {len(marks) - i} of {count} filemarks",
                residual=count - (len(marks) - i),
            )
        back = -count
        if i - back >= 0:
            self._pos = marks[i - back]
            return
        self._pos = 0
        raise BeginningOfMediumError(
            f"{self.name}: beginning of tape after {i} of {back} filemarks", residual=back - i
        )

    # -- data -----------------------------------------------------------------------------

    def set_block_size(self, size: int) -> None:
        if not 0 <= size <= MAX_RECORD:
            raise IllegalRequestError(
                f"{self.name}: block size {size} is not supported (0 or 1..{MAX_RECORD})"
            )
        self._block_size = size

    def write_block(self, data: bytes | bytearray | memoryview) -> bool:
        image = self._image
        if image is None or image.header.cleaning:
            image = self._data_medium()
        pos = self._pos
        self._check_faults("write", pos)
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        length = view.nbytes
        if length == 0 or length > MAX_RECORD:
            raise IllegalRequestError(
                f"{self.name}: cannot write a record of {length} bytes (1..{MAX_RECORD})"
            )
        if self._block_size and length != self._block_size:
            raise IllegalRequestError(
                f"{self.name}: fixed block size is {self._block_size} bytes,"
                f" cannot write a record of {length}"
            )
        header = image.header
        used = image.used(pos) + OBJECT_OVERHEAD + length
        if used > header.capacity:
            raise EndOfMediumError(
                f"{self.name}: end of medium on {self._barcode}: a record of {length} bytes"
                f" does not fit ({image.used(pos)} of {header.capacity} bytes used)",
                residual=length,
            )
        image.write_record(pos, view)
        self._pos = pos + 1
        stats = self._stats
        stats["bytes_written"] += length
        stats["records_written"] += 1
        return used > header.early_warning

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        if count < 0:
            raise IllegalRequestError(f"{self.name}: cannot write {count} filemarks")
        image = self._data_medium()
        pos = self._pos
        if count:
            self._check_faults("write", pos)
            used = image.used(pos) + count * OBJECT_OVERHEAD
            if used > image.header.capacity:
                raise EndOfMediumError(
                    f"{self.name}: end of medium on {self._barcode}: {count} filemark(s)"
                    f" do not fit",
                    residual=count,
                )
            image.write_filemarks(pos, count)
            self._pos = pos + count
            self._stats["filemarks_written"] += count
        if not immediate:
            image.sync()

    def read_block(self, max_size: int) -> bytes:
        image = self._image
        if image is None or image.header.cleaning:
            image = self._data_medium()
        pos = self._pos
        fixed = self._block_size
        if max_size <= 0 or max_size < fixed:
            raise IllegalRequestError(
                f"{self.name}: read buffer of {max_size} bytes"
                + (f" is smaller than the block size {fixed}" if fixed else "")
            )
        at_eod = pos >= image.count
        try:
            self._check_faults("read", None if at_eod else pos)
        except MediaError:
            self._pos = pos + 1  # past the unreadable object, as a drive gives up on it
            raise
        if at_eod:
            raise BlankCheckError(f"{self.name}: end of data at block {pos}", residual=max_size)
        if image.is_filemark(pos):
            self._pos = pos + 1
            self._stats["filemarks_read"] += 1
            raise FilemarkDetected(1 if fixed else max_size)
        length = image.record_length(pos)
        expected = fixed or max_size
        if length > expected or (fixed and length != fixed):
            self._pos = pos + 1
            raise IncorrectLengthError(
                f"{self.name}: record {pos} is {length} bytes, "
                + (f"the block size is {fixed}" if fixed else f"the buffer {max_size}"),
                record_length=length,
                residual=expected - length,
            )
        data = image.read_record(pos)
        self._pos = pos + 1
        stats = self._stats
        stats["bytes_read"] += length
        stats["records_read"] += 1
        return data

    # -- state ----------------------------------------------------------------------------

    def _write_protected(self) -> bool:
        return any(
            f.kind == "write_protect" and f.volume == self._barcode for f in self._faults.current()
        )

    def status(self) -> DriveStatus:
        try:
            image = self._medium()
        except TapeError as e:
            occupant = read_state(self._lib).elements.get(self.address)
            return DriveStatus(
                ready=False,
                loaded=bool(occupant and occupant.loaded),
                block_size=self._block_size,
                volume=occupant.barcode if occupant else None,
                detail=e.message,
            )
        header = image.header
        return DriveStatus(
            ready=not header.cleaning,
            loaded=True,
            cleaning=bool(header.cleaning),
            write_protected=self._write_protected(),
            block_size=self._block_size,
            position=None if header.cleaning else self.read_position(),
            early_warning=image.used(self._pos) > header.early_warning,
            volume=self._barcode,
            detail=self._cleaning_result,
        )

    def remaining_capacity(self) -> int | None:
        try:
            image = self._data_medium()
        except TapeError:
            return None
        return max(0, image.header.early_warning - image.used(image.count))

    def alerts(self) -> frozenset[int]:
        flags = set(self._alerts)
        self._alerts.clear()
        if any(f.kind == "clean" and f.drive == self.name for f in self._faults.current()):
            flags.add(TA_CLEAN_NOW)
        return frozenset(flags)

    def statistics(self) -> dict[str, int | float]:
        return dict(self._stats)
