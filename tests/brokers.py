"""The private RabbitMQ of the replication tests (examples/replication/start-broker) and
helpers to consume what was published. The fixtures using it (`broker`, `names`,
`consumer_factory`) are in `tests/conftest.py`, so that one broker serves every test
directory of a session (tests/replication, tests/subscribe).

The broker is started once per session in a temporary state directory, bound to 127.0.0.1,
and stopped by the PIDs its script recorded. Under CI=true a missing rabbitmq-server is a
failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from backend.replication.broker import Consumer
from backend.replication.credentials import Credentials

REPO = Path(__file__).resolve().parents[1]
START = REPO / "examples" / "replication" / "start-broker"
STOP = REPO / "examples" / "replication" / "stop-broker"
RABBITMQ_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmq-server")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rabbitmq_installed() -> bool:
    return any(os.path.exists(p) for p in RABBITMQ_CANDIDATES) or bool(
        shutil.which("rabbitmq-server")
    )


@dataclass
class BrokerHandle:
    """The private test broker: where it listens, its credentials, stop/start by state dir."""

    state: Path
    host: str
    port: int
    credentials_path: Path

    def url(self, user: str = "alice") -> str:
        return f"amqp://{user}@{self.host}:{self.port}/"

    @property
    def credentials(self) -> Credentials:
        return Credentials.load(self.credentials_path)

    def reachable(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        subprocess.run([str(STOP), str(self.state)], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        subprocess.run([str(START), str(self.state)], check=True, capture_output=True, timeout=180)


def collect(consumer: Consumer, count: int, timeout: float = 30.0) -> list:
    """Receive and ack `count` deliveries (or fewer if `timeout` passes in silence)."""
    got = []
    while len(got) < count:
        d = consumer.get(timeout)
        if d is None:
            break
        got.append(d)
        d.ack()
    return got


def collect_relpaths(consumer: Consumer, expected: set[str], timeout: float = 30.0) -> list[str]:
    """Receive (and ack) until every relPath in `expected` was seen or `timeout` passes in
    silence; returns all relPaths received, duplicates included (delivery is at least once)."""
    got: list[str] = []
    while not expected <= set(got):
        d = consumer.get(timeout)
        if d is None:
            break
        got.append(d.message()["relPath"])
        d.ack()
    return got
