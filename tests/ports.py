"""Free loopback ports for the services the tests start (brokers, HTTP, tgtd)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 the kernel says is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tgt_port(socket_dir: Path) -> int:
    """A loopback TCP port below 32768 (tgtd's control port is a short int) that is free
    for listening and has no tgtd control socket in `socket_dir`."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        if (socket_dir / f"socket.{port}").exists():
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for a VTL")
