"""Publishing with confirms and consuming through the private RabbitMQ; isolation; backoff."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from backend.replication import message as m
from backend.replication.broker import (
    Broker,
    BrokerUnavailable,
    BrokerURL,
    Consumer,
    persistent_queue_name,
    queue_name,
)

from .conftest import collect


def sample(rel: str) -> dict:
    return m.build_message(base_url="http://127.0.0.1:1/", rel_path=rel, size=1)


def test_broker_url_parsing_hides_password() -> None:
    u = BrokerURL.parse("amqp://alice@Host:5673/vh%2Fx")
    assert (u.user, u.host, u.port, u.vhost) == ("alice", "host", 5673, "vh/x")
    assert str(u) == "amqp://alice@host:5673/vh%2Fx"
    assert BrokerURL.parse("amqps://h/").port == 5671
    assert "pw" not in repr(BrokerURL.parse("amqp://a:pw@h/"))
    with pytest.raises(ValueError):
        BrokerURL.parse("http://h/")


def test_queue_names_follow_sr3(tmp_path) -> None:
    name = queue_name("alice", "subscribe", "mirror")
    prefix, user_host_rand = name.rsplit(".", 1)
    assert prefix == "q_alice.subscribe.mirror"
    assert len(user_host_rand.rsplit("_", 1)[1]) == 8
    f = tmp_path / "queue"
    first = persistent_queue_name(f, "alice", "watch", "c")
    assert persistent_queue_name(f, "alice", "watch", "c") == first


def test_publish_with_confirms_and_consume(broker, names, consumer_factory) -> None:
    consumer = consumer_factory(names["exchange"], names["queue"])
    msgs = [sample(f"dir/sub/f{i}.txt") for i in range(20)]
    with Broker(broker.url("alice"), credentials=broker.credentials) as pub:
        items = [(names["exchange"], m.topic_for(x["relPath"]), m.encode(x)) for x in msgs]
        assert pub.publish_batch(items) == 20
        assert pub.publish(names["exchange"], "v03", m.encode(sample("root.txt")))
    got = collect(consumer, 21)
    assert [d.message()["relPath"] for d in got] == [x["relPath"] for x in msgs] + ["root.txt"]
    first = got[0]
    assert first.routing_key == "v03.dir.sub"
    assert first.exchange == names["exchange"]
    # What sr3 needs to recognise v03, and nothing else.
    assert first.content_type == "application/json"
    assert first.properties.get("content_encoding") == "utf-8"
    assert first.properties.get("delivery_mode") == 2
    assert not first.properties.get("application_headers")


def test_subtopic_binding_filters_by_directory(broker, names, consumer_factory) -> None:
    consumer = consumer_factory(names["exchange"], names["queue"], key="v03.keep.#")
    with Broker(broker.url("alice"), credentials=broker.credentials) as pub:
        for rel in ("keep/a", "drop/b", "keep/deep/c"):
            assert pub.publish(names["exchange"], m.topic_for(rel), m.encode(sample(rel)))
    got = collect(consumer, 2)
    assert sorted(d.message()["relPath"] for d in got) == ["keep/a", "keep/deep/c"]
    assert consumer.get(0.3) is None


def test_sources_are_isolated(broker, names) -> None:
    # alice may not create or write bob's exchange ...
    with (
        Broker(broker.url("alice"), credentials=broker.credentials) as pub,
        pytest.raises(BrokerUnavailable, match="ACCESS_REFUSED"),
    ):
        pub.declare_exchange("xs_bob_private")
    # ... and bob may not read alice's.
    with Broker(broker.url("alice"), credentials=broker.credentials) as pub:
        pub.declare_exchange(names["exchange"])
    spy = Consumer(
        broker.url("bob"),
        f"q_bob.spy.t{names['tag']}",
        [(names["exchange"], "v03.#")],
        credentials=broker.credentials,
    )
    with pytest.raises(BrokerUnavailable, match="ACCESS_REFUSED"):
        spy.declare()
    spy.close()


def test_wrong_password_is_refused(broker) -> None:
    url = f"amqp://alice:wrong@{broker.host}:{broker.port}/"
    with pytest.raises(BrokerUnavailable) as info:
        Broker(url).connect()
    assert "wrong" not in str(info.value)


def test_unreachable_broker_logs_one_line_per_state_change(caplog) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    pub = Broker(f"amqp://alice:pw@127.0.0.1:{port}/", max_backoff=0.2, connect_timeout=1)
    caplog.set_level(logging.DEBUG, logger="backend.replication.broker")
    assert not pub.connect_with_backoff(deadline=time.monotonic() + 1.5)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    attempts = [r for r in caplog.records if "still unavailable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unavailable" in warnings[0].getMessage()
    assert len(attempts) >= 2  # it did retry, quietly
