"""What the library manager hands to a mover: a batch of requests for one volume, or an
operator's tape job."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.catalog.db import Catalog
from backend.catalog.queue import Request
from drivers.tape import TapeDrive

JOB = "job"


@dataclass
class TapeJob:
    """Operator work that needs one volume in a drive, run by a free mover in its thread.

    `action(drive, cat)` runs with `volume` mounted (`check_label`: with the label check
    of a normal mount), in the mover's thread with the mover's catalog connection; its
    return value lands in `result`, the text of an exception in `error`, and `done` is
    set either way. A job still waiting when `cancelled` is set is dropped.
    """

    volume: str
    action: Callable[[TapeDrive, Catalog], Any]
    what: str
    check_label: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str | None = None
    cancelled: bool = False


@dataclass
class Work:
    """A mover's next piece of work: `kind` is write, recall or job."""

    kind: str
    volume: str
    requests: list[Request]
    family: str | None = None
    job: TapeJob | None = None


@dataclass
class MoverSlot:
    """What the library manager knows of one mover."""

    name: str
    volume: str | None = None  # mounted or being mounted
    writing: str | None = None  # family it is writing for
    busy: bool = False
    down: bool = False
