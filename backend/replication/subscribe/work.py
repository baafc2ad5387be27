"""What the steps of the flow hand each other: a message's `Work`, its `Outcome`, the
counts of what became of messages, and the exceptions that end a transfer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.replication.broker import Delivery
from backend.replication.message import parse_time

#: a report's code and text
Result = tuple[int, str]


class Mismatch(Exception):
    """Downloaded data does not match its announcement (size or identity)."""


class Stopping(Exception):
    """The subscriber is stopping: abandon the transfer (it resumes at the next start)."""


@dataclass
class Work:
    """One message to apply, from a delivery or from the retry queue."""

    seq: int
    msg: dict[str, Any]
    rel: str
    exchange: str
    topic: str
    old_rel: str | None = None  # rename: the old name, mapped to a local relPath
    link_rel: str | None = None  # hlink: the other name, mapped
    remove_old: bool = False  # a rename to a rejected name: the old name goes away
    delivery: Delivery | None = None
    retry_id: int | None = None
    attempts: int = 0
    report_msg: dict[str, Any] | None = None  # the message as reported (cod: real sum)
    # state updates applied with the report, in one transaction, once the work is done
    finish: list[Callable[[], None]] = field(default_factory=list)
    stored_file: Path | None = None  # for on_file

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.rel, self.old_rel, self.link_rel) if p)


@dataclass
class Outcome:
    """How a message's work ended."""

    ack: bool  # False: hold the delivery (the archive is not mounted)
    code: int = 0
    text: str = ""


@dataclass
class Stats:
    """What became of messages, by report code or reason (logged at the stop)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str) -> None:
        self.counts[what] += 1


def mode_of(msg: Mapping[str, Any]) -> int | None:
    """The permission bits a message announces."""
    return int(msg["mode"], 8) & 0o7777 if "mode" in msg else None


def time_of(msg: Mapping[str, Any], key: str) -> int | None:
    """`mtime` or `atime` of a message, in ns."""
    return parse_time(msg[key], key) if key in msg else None
