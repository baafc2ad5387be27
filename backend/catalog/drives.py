"""The drives table: each tape drive's service state and the session its mover runs.

`state` is the operator's (and the error policy's) decision: `up` or `down`, with the
reason. `session` is what the drive's mover is doing now, CTA-style (see
backend.mover.states), with the volume it holds; other processes (`reelfs drives`,
`reelfs status`) read both from here. `needs_cleaning` is set when the drive or the
operator asks for a cleaning, and cleared by the cleaning session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from backend.catalog.db import Catalog

UP, DOWN = "up", "down"


@dataclass
class Drive:
    """A row of the drives table."""

    name: str
    state: str
    session: str | None
    volume: str | None
    reason: str | None
    address: int | None
    serial: str | None
    updated_ns: int | None


class DriveTable:
    """The catalog's record of the library's drives."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def register(self, name: str, address: int, serial: str) -> None:
        """A mover starts on this drive: known from now on, its service state kept."""
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO drives(name, address, serial, state, session, updated_ns) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET address=excluded.address, "
                "serial=excluded.serial, updated_ns=excluded.updated_ns",
                (name, address, serial, UP, "idle", time.time_ns()),
            )

    def all(self) -> list[Drive]:
        return [
            Drive(*r)
            for r in self.cat.all(
                "SELECT name, state, session, volume, reason, address, serial, updated_ns "
                "FROM drives ORDER BY name"
            )
        ]

    def names(self) -> set[str]:
        return {r[0] for r in self.cat.all("SELECT name FROM drives")}

    def down(self) -> set[str]:
        return {r[0] for r in self.cat.all("SELECT name FROM drives WHERE state=?", (DOWN,))}

    def count_up(self) -> int:
        return int(self.cat.value("SELECT count(*) FROM drives WHERE state=?", (UP,)) or 0)

    def is_down(self, name: str) -> bool:
        return self.cat.value("SELECT state FROM drives WHERE name=?", (name,)) == DOWN

    def set_session(self, name: str, session: str, volume: str | None) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET session=?, volume=?, updated_ns=? WHERE name=?",
                (session, volume, time.time_ns(), name),
            )

    def set_up(self, name: str) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET state=?, session='idle', reason=NULL, updated_ns=? WHERE name=?",
                (UP, time.time_ns(), name),
            )

    def set_down(self, name: str, reason: str, *, stuck: str | None = None) -> None:
        """The drive is out of service; `stuck` names a cartridge left in it."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET state=?, session='down', volume=?, reason=?, updated_ns=? "
                "WHERE name=?",
                (DOWN, stuck, reason, time.time_ns(), name),
            )

    def mark_down(self, name: str, reason: str) -> None:
        """The operator takes the drive out of service; its mover ends its session."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET state=?, reason=?, updated_ns=? WHERE name=?",
                (DOWN, reason, time.time_ns(), name),
            )

    def reset_sessions(self) -> None:
        """At start no mover runs yet: the drives in service are idle and empty."""
        with self.cat.tx():
            self.cat.execute("UPDATE drives SET session='idle', volume=NULL WHERE state=?", (UP,))

    # -- cleaning --------------------------------------------------------------------------

    def needs_cleaning(self, name: str) -> bool:
        return bool(self.cat.value("SELECT needs_cleaning FROM drives WHERE name=?", (name,)))

    def ask_cleaning(self, name: str) -> bool:
        """Mark the drive for cleaning; False if it was marked already."""
        with self.cat.tx():
            return bool(
                self.cat.execute(
                    "UPDATE drives SET needs_cleaning=1 WHERE name=? AND needs_cleaning=0",
                    (name,),
                ).rowcount
            )

    def cleaning_done(self, name: str) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE drives SET needs_cleaning=0 WHERE name=?", (name,))
