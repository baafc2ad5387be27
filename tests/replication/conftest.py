"""Fixtures for replication tests: a private RabbitMQ (examples/replication/start-broker),
unique exchange/queue names, and helpers to consume what was published.

The broker is started once per session in a temporary state directory, bound to 127.0.0.1,
and stopped by the PIDs its script recorded. Under CI=true a missing rabbitmq-server is a
failure, not a skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.replication.broker import Consumer
from backend.replication.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
START = REPO / "examples" / "replication" / "start-broker"
STOP = REPO / "examples" / "replication" / "stop-broker"
RABBITMQ_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmq-server")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _rabbitmq_installed() -> bool:
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


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    if not _rabbitmq_installed():
        message = "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    state = tmp_path_factory.mktemp("rabbitmq")
    proc = subprocess.run([str(START), str(state)], capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        subprocess.run([str(STOP), str(state)], capture_output=True, timeout=120)
        pytest.fail(f"start-broker failed:\n{proc.stdout}\n{proc.stderr}")
    env = dict(
        line.split("=", 1)
        for line in (state / "broker.env").read_text().splitlines()
        if "=" in line
    )
    handle = BrokerHandle(
        state=state,
        host=env["REELFS_BROKER_HOST"],
        port=int(env["REELFS_BROKER_PORT"]),
        credentials_path=Path(env["REELFS_CREDENTIALS"]),
    )
    try:
        yield handle
    finally:
        subprocess.run([str(STOP), str(state), "--purge"], capture_output=True, timeout=120)


_counter = itertools.count()


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """An exchange and a queue name unique to the test, within alice's permissions."""
    tag = f"{next(_counter)}{uuid.uuid4().hex[:6]}"
    yield {
        "exchange": f"xs_alice_t{tag}",
        "queue": f"q_alice.test.t{tag}",
        "tag": tag,
    }


@pytest.fixture
def consumer_factory(broker: BrokerHandle) -> Iterator:
    """Make consumers (declared at once, so nothing published afterwards is lost);
    their queues are deleted at the end of the test."""
    made: list[Consumer] = []

    def make(exchange: str, queue: str, key: str = "v03.#", user: str = "alice") -> Consumer:
        c = Consumer(
            broker.url(user),
            queue,
            [(exchange, key)],
            credentials=broker.credentials,
            declare_exchanges=True,
            prefetch=100,
        )
        c.declare()
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.delete_queue()
        except Exception:  # best effort: the broker may have been stopped by the test
            c.close()


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
