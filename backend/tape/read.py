"""`reelfs tape read VOLUME FILENO`: the raw bytes of one data file of a volume.

What `dd if=/dev/nst0 bs=256k` prints after `mt fsf`: every record of the tape file, in
order, up to its filemark, so that `reelfs tape read V 3 | tar -tvf -` lists it. FILENO
counts data files from 0 on every volume, as `user.reelfs.location` does: on an unlabelled
volume it is the tape file number, on a labelled one the header labels before the data
are read and checked (HDR1's file sequence number is FILENO + 1) and skipped. Data files
of foreign volumes are found by the catalog's record of them.

The same code runs in a mover of the daemon (the archive is mounted; see
backend.admin.tapes) and on a drive of the library taken offline (backend.library.offline).
"""

from __future__ import annotations

import os

from backend.catalog.db import Catalog
from backend.catalog.tapefiles import TapeFiles
from backend.errors import ArchiveError
from backend.tape.layout import ANSI, NONE, read_bot, volume_format
from drivers.formats.ansi import read_header
from drivers.formats.foreign import DEFAULT_MAX_RECORD
from drivers.tape import (
    BlankCheckError,
    FilemarkDetected,
    IncorrectLengthError,
    SpaceUnit,
    TapeDrive,
)


def position(
    drive: TapeDrive, cat: Catalog | None, label: str, fileno: int, default_layout: str
) -> int:
    """Put the drive, in variable-length mode, at the first record of data file `fileno`;
    returns the record size to read with."""
    if fileno < 0:
        raise ArchiveError(f"data file numbers start at 0, not {fileno}")
    fmt = volume_format(cat, label) if cat is not None else None
    drive.set_block_size(0)
    max_record = max((fmt.block_size if fmt else None) or 0, DEFAULT_MAX_RECORD)
    if fmt is not None and fmt.foreign:
        assert cat is not None  # fmt is the catalog's
        block = TapeFiles(cat).first_block(label, fileno)
        if block is None:
            raise ArchiveError(
                f"foreign volume {label}: no files were imported from data file {fileno}"
            )
        drive.locate(block)
        return max_record
    if fmt is not None and (fmt.label_format or fmt.eod_block):
        layout = fmt.layout(default_layout)
    else:
        # not in the catalog, or blank there: the tape says
        layout = ANSI if read_bot(drive).kind == "vol1" else NONE
    drive.rewind()
    try:
        if layout == ANSI:
            if fileno:
                drive.space(3 * fileno, SpaceUnit.FILEMARKS)
            else:
                drive.read_block(max_record)  # VOL1, which shares tape file 0 with HDR1-2
            labels = read_header(drive)
            if labels.label1.file_sequence != (fileno + 1) % 10_000:
                raise ArchiveError(
                    f"volume {label}: the header labels of data file {fileno} say file "
                    f"sequence {labels.label1.file_sequence}, not {fileno + 1}"
                )
        elif fileno:
            drive.space(fileno, SpaceUnit.FILEMARKS)
    except BlankCheckError:
        raise ArchiveError(f"volume {label} has no data file {fileno} (end of data)") from None
    return max_record


def copy_tape_file(drive: TapeDrive, out: int, max_record: int) -> tuple[int, int]:
    """Copy the records up to the next filemark (or end of data) to file descriptor `out`;
    returns (records, bytes). ArchiveError when the drive is at end of data."""
    records = nbytes = 0
    while True:
        try:
            data = drive.read_block(max_record)
        except FilemarkDetected:
            break
        except BlankCheckError:
            if not records:
                raise ArchiveError("end of data") from None
            break  # a tape file a crash left without its filemark
        except IncorrectLengthError as e:
            if not e.record_length:
                raise
            drive.space(-1)  # the drive is after the long record: read it whole
            data = drive.read_block(e.record_length)
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]
        records += 1
        nbytes += len(data)
    return records, nbytes


def read_data_file(
    drive: TapeDrive,
    cat: Catalog | None,
    label: str,
    fileno: int,
    out: int,
    *,
    default_layout: str,
) -> dict[str, int | str]:
    """Position and copy: the whole of `tape read` on a loaded drive."""
    max_record = position(drive, cat, label, fileno, default_layout)
    try:
        records, nbytes = copy_tape_file(drive, out, max_record)
    except ArchiveError:
        raise ArchiveError(f"volume {label} has no data file {fileno} (end of data)") from None
    return {"volume": label, "fileno": fileno, "records": records, "bytes": nbytes}
