"""The daemon's control socket: one JSON request per connection, one JSON answer.

The CLI and other processes (`reelfs serve`, `reelfs subscribe`) reach the archive daemon
here: a wake-up after they queued work in the catalog, or an operation that must run
where the open files are (release, flush, drain). The socket is a Unix socket in the
archive's `run/` directory, mode 600: only the archive's owner may steer it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

MAX_MESSAGE = 16 * 1024 * 1024


class DaemonNotRunning(ConnectionError):
    """Nothing answers on the archive's control socket: the archive is not mounted."""

    pass


class ControlError(RuntimeError):
    """The daemon refused or failed the operation; the message says why."""


def call(socket_path: Path, op: str, *, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (raises ControlError on refusal)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonNotRunning(f"the archive daemon is not running ({socket_path})") from e
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        total = 0
        while True:
            b = s.recv(65536)
            if not b:
                break
            total += len(b)
            if total > MAX_MESSAGE:
                raise ControlError("answer from the daemon too large")
            chunks.append(b)
    finally:
        s.close()
    if not chunks:
        raise ControlError(f"the daemon closed the connection without answering {op!r}")
    answer = json.loads(b"".join(chunks))
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "unknown error"))
    return answer


def is_running(socket_path: Path) -> bool:
    try:
        call(socket_path, "ping", timeout=5)
        return True
    except (DaemonNotRunning, OSError, ControlError, ValueError):
        return False


def bind(socket_path: Path) -> socket.socket:
    """A listening socket for the daemon (any stale socket file is replaced)."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(str(socket_path))
    finally:
        os.umask(old)
    s.listen(64)
    s.setblocking(False)
    return s
