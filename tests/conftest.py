"""Fixtures shared by test directories: the session's private RabbitMQ (`broker`), unique
exchange/queue names (`names`) and consumers that clean up after themselves
(`consumer_factory`). See `tests/brokers.py`."""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.replication.broker import Consumer
from tests.brokers import START, STOP, BrokerHandle, rabbitmq_installed


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    if not rabbitmq_installed():
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
