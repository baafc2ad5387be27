"""The operator commands by name, and `run`, the one way to run them.

`OPERATIONS` maps each command's name (also its name on the daemon's control socket) to
its single implementation (backend.admin.files, .library, .drives, .tapes) and to where
it may run: anywhere, only in the daemon (it needs the open files or the movers), or only
without it (it replaces what the daemon holds). `run(config, name, **args)` sends the
command to the daemon when the archive is mounted and runs it right here, holding the
archive lock, when it is not; either way the caller gets the handler's answer, or an
ArchiveError with the reason. The CLI only parses arguments and prints answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.admin import checks, drives, files, library, tapes
from backend.admin.context import Handler, LocalContext
from backend.admin.control import DaemonNotRunning, call, is_running
from backend.config import Config
from backend.errors import ArchiveError

ANYWHERE, DAEMON, LOCAL = "anywhere", "daemon", "local"

#: how long a command may wait for the daemon's answer (a whole volume's scan)
LONG = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Operation:
    """One operator command: its handler, where it may run, and how long a caller waits."""

    handler: Handler
    where: str = ANYWHERE
    #: why it cannot run where it was asked to ({archive} is filled in)
    refusal: str = ""
    timeout: float = 600.0

    def check(self, args: dict[str, Any]) -> None:
        """ArchiveError unless `args` are what the handler takes (a request from another
        process: a TypeError raised inside a handler is a bug, not a bad request)."""
        try:
            inspect.signature(self.handler).bind(None, **args)
        except TypeError as e:
            raise ArchiveError(f"{self.handler.__name__}: bad arguments: {e}") from None


OPERATIONS: dict[str, Operation] = {
    "flush": Operation(
        files.flush,
        DAEMON,
        "archive {archive} is not mounted: files are written to tape by the running "
        "archive (reelfs mount)",
    ),
    "release": Operation(files.release),
    "recall": Operation(files.recall),
    "pin": Operation(files.pin),
    "unpin": Operation(files.unpin),
    "drive": Operation(drives.set_state),
    "library.inventory": Operation(library.inventory),
    "library.import": Operation(library.import_cartridges),
    "library.reconcile": Operation(library.reconcile),
    "library.export": Operation(library.export),
    "library.clean": Operation(library.clean),
    "tape.read": Operation(tapes.tape_read, timeout=LONG),
    "tape.import": Operation(tapes.import_volume, timeout=LONG),
    "catalog.check": Operation(checks.check),
    "catalog.rebuild": Operation(
        tapes.rebuild_catalog,
        LOCAL,
        "archive {archive} is mounted: unmount it first (its catalog is replaced)",
    ),
}


def run(
    config: Config,
    name: str,
    /,
    *,
    progress: Callable[[str], None] | None = None,
    **args: Any,
) -> dict[str, Any]:
    """Run operator command `name` on the archive of `config`, in its daemon if one runs
    (`args` are the command's own, `name` among them for `drive`)."""
    op = OPERATIONS[name]
    refusal = op.refusal.format(archive=config.archive)
    if op.where == LOCAL:
        if is_running(config.socket_path):
            raise ArchiveError(refusal)
        return _local(config, op, progress, args)
    try:
        answer = call(config.socket_path, name, timeout=op.timeout, **args)
    except DaemonNotRunning:
        if op.where == DAEMON:
            raise ArchiveError(refusal) from None
        return _local(config, op, progress, args)
    answer.pop("ok", None)
    return answer


def _local(
    config: Config,
    op: Operation,
    progress: Callable[[str], None] | None,
    args: dict[str, Any],
) -> dict[str, Any]:
    with LocalContext(config, progress=progress) as ctx:
        return op.handler(ctx, **args)
