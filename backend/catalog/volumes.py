"""The volume clerk: tape volumes, their state and free space, and which one a family writes.

A family writes its own volumes; when none has room it draws a blank volume from the
common pool, oldest insertion first (the Enstore seed's question, answered: volumes are
drawn from the unallocated pool in the order they were put into the library).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from backend.catalog.db import Catalog

BLANK, WRITABLE, FULL, READONLY, SUSPECT, NOACCESS, MISSING, CLEANING = (
    "blank",
    "writable",
    "full",
    "readonly",
    "suspect",
    "noaccess",
    "missing",
    "cleaning",
)
RETIRED, EXPORTED = "retired", "exported"
#: the changer failed to move the cartridge: it is not where the catalog had it (its
#: error says where it was going and why); nothing mounts it until reconciled
STUCK = "stuck"
#: states from which data can still be read
READABLE = (WRITABLE, FULL, READONLY, SUSPECT)


def is_cleaning_label(label: str | None) -> bool:
    """Cleaning cartridges are told by their barcode (CLN...): tgt reports no medium type."""
    return bool(label) and label.upper().startswith("CLN")  # type: ignore[union-attr]


_COLS = (
    "label, library, media_type, capacity, bytes_used, state, family, storage_group, "
    "inserted_ns, mount_count, last_mount_ns, files, next_fileno, eod_block, home, error, uses"
)


@dataclass
class Volume:
    """A row of `volumes`: a cartridge the archive knows, its state, pool and space."""

    label: str
    library: str
    media_type: str
    capacity: int
    bytes_used: int
    state: str
    family: str | None
    storage_group: str | None
    inserted_ns: int
    mount_count: int
    last_mount_ns: int | None
    files: int
    next_fileno: int
    eod_block: int
    home: int | None
    error: str | None
    uses: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.bytes_used)


class VolumeClerk:
    """The volumes table: cartridges, their states, homes, space, and drawing blanks."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def add(
        self,
        label: str,
        *,
        capacity: int,
        home: int | None,
        media_type: str = "emulated",
        state: str = BLANK,
        inserted_ns: int | None = None,
    ) -> Volume:
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO volumes(label, media_type, capacity, state, inserted_ns, home) "
                "VALUES (?,?,?,?,?,?)",
                (label, media_type, capacity, state, inserted_ns or time.time_ns(), home),
            )
        v = self.get(label)
        assert v is not None
        return v

    def get(self, label: str) -> Volume | None:
        row = self.cat.one(f"SELECT {_COLS} FROM volumes WHERE label=?", (label,))
        return None if row is None else Volume(*row)

    def all(self) -> list[Volume]:
        return [Volume(*r) for r in self.cat.all(f"SELECT {_COLS} FROM volumes ORDER BY label")]

    def set_state(self, label: str, state: str, error: str | None = None) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, error=? WHERE label=?", (state, error, label)
            )

    def set_stuck(self, label: str, where: str, why: str) -> str | None:
        """The changer failed moving `label` (`where`: from what to what); its state
        before is kept in the error, as `missing` does, for `unstick`. Returns that state."""
        with self.cat.tx():
            row = self.cat.one("SELECT state, error FROM volumes WHERE label=?", (label,))
            if row is None:
                return None
            state, error = row
            previous = (error or "").rpartition("; was ")[2] if state == STUCK else state
            self.cat.execute(
                "UPDATE volumes SET state=?, error=? WHERE label=?",
                (STUCK, f"stuck {where}: {why}; was {previous or FULL}", label),
            )
            return previous

    def unstick(self, label: str, home: int | None) -> str | None:
        """A stuck cartridge is back in a slot: its state before, restored (None: it was
        not stuck)."""
        with self.cat.tx():
            row = self.cat.one("SELECT state, error FROM volumes WHERE label=?", (label,))
            if row is None or row[0] != STUCK:
                return None
            previous = (row[1] or "").rpartition("; was ")[2] or FULL
            self.cat.execute(
                "UPDATE volumes SET state=?, error=NULL, home=coalesce(?, home) WHERE label=?",
                (previous, home, label),
            )
            return previous

    def set_home(self, label: str, home: int | None) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE volumes SET home=? WHERE label=?", (home, label))

    def for_write(
        self, family: str, need: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> Volume | None:
        """A writable volume of `family` with room for `need` bytes; the fullest first, so
        that partly written volumes get filled before new ones are started."""
        for r in self.cat.all(
            f"SELECT {_COLS} FROM volumes WHERE state=? AND family=? "
            "AND capacity - bytes_used >= ? ORDER BY bytes_used DESC, label",
            (WRITABLE, family, need),
        ):
            v = Volume(*r)
            if v.label not in exclude:
                return v
        return None

    def draw_blank(
        self,
        family: str,
        storage_group: str | None,
        need: int,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> Volume | None:
        """Give `family` the oldest blank volume of the common pool that can hold `need`."""
        with self.cat.tx():
            for r in self.cat.all(
                f"SELECT {_COLS} FROM volumes WHERE state=? AND capacity >= ? "
                "ORDER BY inserted_ns, label",
                (BLANK, need),
            ):
                v = Volume(*r)
                if v.label in exclude:
                    continue
                self.cat.execute(
                    "UPDATE volumes SET state=?, family=?, storage_group=? WHERE label=?",
                    (WRITABLE, family, storage_group, v.label),
                )
                return self.get(v.label)
        return None

    def has_blank(self, need: int) -> bool:
        """Whether the common pool still has a blank volume that can hold `need` bytes."""
        return (
            self.cat.one(
                "SELECT 1 FROM volumes WHERE state=? AND capacity >= ? LIMIT 1", (BLANK, need)
            )
            is not None
        )

    def mounted(self, label: str) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET mount_count = mount_count + 1, last_mount_ns=? WHERE label=?",
                (time.time_ns(), label),
            )

    def pool_capacity(self) -> tuple[int, int]:
        """(total, free) bytes over the volumes that hold or can take data."""
        row = self.cat.one(
            "SELECT COALESCE(SUM(capacity),0), "
            "COALESCE(SUM(CASE WHEN state IN ('blank','writable') "
            "THEN MAX(capacity - bytes_used, 0) ELSE 0 END),0) "
            "FROM volumes WHERE state NOT IN ('cleaning','retired','missing','exported')"
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def reclaimable(self) -> int:
        """Bytes of deleted tape copies (files removed or overwritten) on the volumes that
        hold data: tape a repack would give back."""
        return int(
            self.cat.value(
                "SELECT COALESCE(SUM(c.length), 0) FROM tape_copies c JOIN volumes v "
                "ON v.label = c.volume WHERE c.state='deleted' "
                "AND v.state NOT IN ('cleaning','retired','missing','exported')"
            )
            or 0
        )

    def default_capacity(self, configured: int = 0) -> int:
        """The capacity given to a cartridge the catalog learns of: `[library]
        default_capacity`, else that of the largest volume already known."""
        return configured or self.largest_capacity()

    def states(self) -> dict[str, tuple[str, str | None]]:
        """label -> (state, error) of every volume."""
        return {r[0]: (r[1], r[2]) for r in self.cat.all("SELECT label, state, error FROM volumes")}

    def add_cartridge(
        self, label: str, *, state: str, capacity: int, media_type: str, home: int | None
    ) -> None:
        """A cartridge found in the library for the first time."""
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO volumes(label, media_type, capacity, state, inserted_ns, home) "
                "VALUES (?,?,?,?,?,?)",
                (label, media_type, capacity, state, time.time_ns(), home),
            )

    def returned(self, label: str, state: str, home: int | None) -> None:
        """A volume back in the library gets its previous state back."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, error=NULL, home=? WHERE label=?",
                (state, home, label),
            )

    def set_first_use(
        self, label: str, *, layout: str, volser: str | None, block_size: int, eod_block: int
    ) -> None:
        """A blank volume is started: its layout, VOL1 serial, record size and end."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET label_format=?, volser=?, block_size=?, eod_block=? "
                "WHERE label=?",
                (layout, volser, block_size, eod_block, label),
            )

    # -- cleaning cartridges ---------------------------------------------------------------

    def cleaning_cartridges(self) -> list[tuple[str, int]]:
        """(label, uses) of the usable cleaning cartridges, the least used first."""
        return [
            (r[0], int(r[1]))
            for r in self.cat.all(
                "SELECT label, uses FROM volumes WHERE state=? ORDER BY uses, label", (CLEANING,)
            )
        ]

    def cleaning_used(self, label: str, uses: int, *, retire: bool) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET uses=?, state=?, last_mount_ns=?, "
                "mount_count=mount_count+1, error=? WHERE label=?",
                (
                    uses,
                    RETIRED if retire else CLEANING,
                    time.time_ns(),
                    "expired" if retire else None,
                    label,
                ),
            )

    def largest_room(self) -> int:
        """The most bytes a blank or writable volume can still take: what the largest
        pending file is measured against."""
        return int(
            self.cat.value(
                "SELECT COALESCE(MAX(MAX(capacity - bytes_used, 0)),0) FROM volumes "
                "WHERE state IN (?,?)",
                (BLANK, WRITABLE),
            )
            or 0
        )

    def largest_capacity(self) -> int:
        return int(
            self.cat.value(
                "SELECT COALESCE(MAX(capacity),0) FROM volumes "
                "WHERE state NOT IN ('cleaning','retired')"
            )
            or 0
        )
