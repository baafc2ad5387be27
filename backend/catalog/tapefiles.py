"""What the catalog records of the tape files on a volume: the columns that say how the
volume is laid out, and the tape copies its data files hold.

`backend.tape.layout.volume_format` makes its `VolumeFormat` of `format_columns`;
`backend.tape.read` finds a data file of a foreign volume by the copies imported from it.

Tables written: `tape_copies` (`add_copy`), for the rows learnt by reading a tape rather
than by writing one: the files adopted from a foreign volume (backend.catalog.foreign) and
a catalog rebuilt from tapes (backend.catalog.rebuild). The file clerk follows a copy the
archive writes through its life (written, deleted with its version, bad); these rows
arrive whole, every column taken from the tape, in the caller's transaction.
"""

from __future__ import annotations

from backend.catalog.db import Catalog

#: volumes' columns for backend.tape.layout.VolumeFormat, in its order: label,
#: label_format, volser, origin, block_size, eod_block, next_fileno
FormatColumns = tuple[str, str | None, str | None, str | None, int | None, int, int]


class TapeFiles:
    """The tape files of volumes as the catalog has them."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def format_columns(self, label: str) -> FormatColumns | None:
        """How volume `label` is laid out on tape; None for a volume the catalog lacks."""
        row = self.cat.one(
            "SELECT label, label_format, volser, origin, block_size, eod_block, next_fileno "
            "FROM volumes "
            "WHERE label=?",
            (label,),
        )
        return None if row is None else tuple(row)  # type: ignore[return-value]

    def copies_on(self, label: str) -> int:
        """Tape copies on volume `label`, whatever their state."""
        return int(self.cat.value("SELECT count(*) FROM tape_copies WHERE volume=?", (label,)))

    def first_block(self, label: str, fileno: int) -> int | None:
        """The block data file `fileno` of volume `label` starts at, as its copies say;
        None when no copy is recorded there."""
        return self.cat.value(
            "SELECT MIN(block) FROM tape_copies WHERE volume=? AND fileno=?", (label, fileno)
        )

    def add_copy(
        self,
        bitfile: int,
        volume: str,
        *,
        copy: int,
        fileno: int,
        block: int,
        record: int,
        offset: int,
        length: int,
        state: str,
        written_ns: int,
        format: str | None = None,
    ) -> None:
        """Record where a bitfile's data is on tape; `format` None for reelfs pax."""
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, record, offset, "
                "length, state, written_ns, format) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    bitfile,
                    volume,
                    copy,
                    fileno,
                    block,
                    record,
                    offset,
                    length,
                    state,
                    written_ns,
                    format,
                ),
            )
