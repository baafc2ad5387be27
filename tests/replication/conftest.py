"""Fixtures for replication tests: the private RabbitMQ and its helpers now live in
`tests/brokers.py` (fixtures `broker`, `names`, `consumer_factory` in `tests/conftest.py`,
shared with tests/subscribe so that a session starts one broker). The names below are
re-exported for the tests that import them from here.
"""

from __future__ import annotations

from tests.brokers import REPO, BrokerHandle, collect, collect_relpaths

__all__ = ["REPO", "BrokerHandle", "collect", "collect_relpaths"]
