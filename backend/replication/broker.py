"""AMQP 0-9-1 access to a RabbitMQ broker with py-amqp: publishing with confirms, consuming.

* `BrokerURL` parses `amqp://user@host:port/vhost`; the password comes from the
  credentials file (`credentials.Credentials`), never from configuration or logs.
* `Publisher`-side: `Broker` holds one connection and one channel in confirm mode,
  declares durable topic exchanges and publishes batches, waiting for the broker's
  confirms. Messages carry `content_type=application/json`, `content_encoding=utf-8`,
  `delivery_mode=2` and no headers: stock sr3 drops a v03 body without that content type.
* `Consumer` holds a durable queue named the sr3 way (`q_<user>.<component>.<config>.<share>`)
  bound with `<topic_prefix>.<subtopic>`, with a prefetch window and explicit acks.
* Both reconnect with exponential backoff when the broker is down or restarts, logging one
  line per state change (down, up again), not one per attempt.

Neither class is thread-safe: use one per thread.
"""

from __future__ import annotations

import collections
import getpass
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import amqp
import amqp.exceptions

from .credentials import Credentials, CredentialsError, parse_url_parts
from .message import JSON_CONTENT_TYPE, MessageError, decode

log = logging.getLogger(__name__)

# Failures after which the only recovery is a new connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError, socket.timeout, TimeoutError
    amqp.exceptions.AMQPError,
    CredentialsError,
)


class BrokerUnavailable(Exception):
    """The broker cannot be reached or the connection was lost; retry later.

    `confirmed` tells how many messages of the batch being published were confirmed before
    the failure (as a contiguous prefix).
    """

    def __init__(self, message: str, confirmed: int = 0) -> None:
        super().__init__(message)
        self.confirmed = confirmed


@dataclass(frozen=True)
class BrokerURL:
    """`amqp[s]://user@host:port/vhost` without its password (which lives elsewhere)."""

    scheme: str
    user: str | None
    host: str
    port: int
    vhost: str
    password: str | None = None  # only if the URL itself carried one (tests, sr3 style)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        scheme, user, password, host, port = parse_url_parts(url)
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"broker URL must be amqp:// or amqps://, got {scheme}://")
        path = urlsplit(url).path
        vhost = unquote(path[1:]) if len(path) > 1 else "/"
        default = 5671 if scheme == "amqps" else 5672
        return cls(scheme, user, host, port or default, vhost, password)

    def __str__(self) -> str:
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"{self.scheme}://{user}{self.host}:{self.port}/{vhost}"

    def __repr__(self) -> str:
        return f"BrokerURL({self})"


def queue_name(user: str, component: str, config: str, share: str | None = None) -> str:
    """`q_<user>.<component>.<config>.<share>`: sr3's queue naming.

    sr3's share is `<USER>_<hostname>_<8 random chars>`; the caller must persist the name
    (see `persistent_queue_name`) so the durable queue is found again after a restart.
    """
    if share is None:
        rand8 = secrets.token_hex(4)
        share = f"{getpass.getuser()}_{socket.gethostname().split('.')[0]}_{rand8}"
    return f"q_{user}.{component}.{config}.{share}"


def persistent_queue_name(path: str | Path, user: str, component: str, config: str) -> str:
    """Read a queue name from `path`, or make one (sr3 style) and write it there."""
    p = Path(path)
    try:
        name = p.read_text(encoding="utf-8").strip()
        if name:
            return name
    except FileNotFoundError:
        pass
    name = queue_name(user, component, config)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(name + "\n", encoding="utf-8")
    return name


class Backoff:
    """Exponential backoff with jitter: initial, doubled each failure, capped at maximum."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next_delay(self) -> float:
        delay = self.current
        self.current = min(self.maximum, self.current * 2)
        return delay * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.current = self.initial


class LinkState:
    """Logs the state of a link once per change: `down (reason)` then `up again`."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.logger = logger
        self.state = "new"
        self.failures = 0
        self.down_since = 0.0

    def up(self) -> None:
        if self.state == "down":
            self.logger.info(
                "%s: connected again after %.1fs (%d failed attempts)",
                self.what,
                time.monotonic() - self.down_since,
                self.failures,
            )
        elif self.state == "new":
            self.logger.info("%s: connected", self.what)
        self.state = "up"
        self.failures = 0

    def down(self, exc: BaseException) -> None:
        self.failures += 1
        if self.state != "down":
            self.down_since = time.monotonic()
            self.logger.warning(
                "%s: unavailable (%s); retrying with backoff", self.what, _describe(exc)
            )
        else:
            self.logger.debug("%s: still unavailable (%s)", self.what, _describe(exc))
        self.state = "down"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


class _Connection:
    """A py-amqp connection and channel, opened from a URL and the credentials file."""

    def __init__(
        self,
        url: str | BrokerURL,
        *,
        credentials: Credentials | None = None,
        heartbeat: int = 60,
        connect_timeout: float = 10.0,
        client_name: str = "reelfs",
        logger: logging.Logger = log,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self._credentials = credentials
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self.logger = logger
        self.conn: amqp.Connection | None = None
        self.channel: Any = None
        self.link = LinkState(f"broker {self.url}", logger)
        self.backoff = Backoff(maximum=max_backoff)

    def _password(self) -> tuple[str, str]:
        if self.url.password is not None and self.url.user:
            return self.url.user, self.url.password
        creds = self._credentials if self._credentials is not None else Credentials.load()
        found = creds.lookup(
            "amqp" if self.url.scheme == "amqp" else "amqps",
            self.url.user,
            self.url.host,
            self.url.port,
        )
        if found is None:
            raise CredentialsError(f"no password for {self.url} in {creds.path}")
        return found.user, found.password

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.connected and self.channel is not None

    def connect(self) -> None:
        """Open connection and channel (no-op if open); raises BrokerUnavailable."""
        if self.connected:
            return
        self.close()
        try:
            user, password = self._password()
            host = f"[{self.url.host}]" if ":" in self.url.host else self.url.host
            conn = amqp.Connection(
                host=f"{host}:{self.url.port}",
                userid=user,
                password=password,
                virtual_host=self.url.vhost,
                ssl=self.url.scheme == "amqps",
                heartbeat=self.heartbeat,
                connect_timeout=self.connect_timeout,
                login_method="PLAIN",
                client_properties={"connection_name": self.client_name},
            )
            conn.connect()
            self.conn = conn
            self.channel = conn.channel()
            self._setup_channel()
        except CONNECTION_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"{self.url}: {_describe(exc)}") from exc
        self.link.up()
        self.backoff.reset()

    def _setup_channel(self) -> None:
        """Hook for subclasses: confirm mode, queue declarations."""

    def close(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is None:
            return
        try:
            conn.close()
        except Exception:
            try:
                conn.collect()
            except Exception:
                pass

    def connect_with_backoff(
        self, stop: threading.Event | None = None, deadline: float | None = None
    ) -> bool:
        """Connect, retrying with backoff until connected, `stop` is set or `deadline`
        (time.monotonic) passes. Returns whether connected."""
        while True:
            try:
                self.connect()
                return True
            except BrokerUnavailable as exc:
                self.link.down(exc.__cause__ or exc)
            delay = self.backoff.next_delay()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
                if delay <= 0:
                    return False
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                time.sleep(delay)

    def lost(self, exc: BaseException) -> None:
        """Record a failure of an open connection and drop it."""
        self.link.down(exc)
        self.close()

    def tick(self) -> None:
        """Process pending frames (close, blocked) and heartbeats while otherwise idle."""
        if not self.connected:
            return
        try:
            self.conn.drain_events(timeout=0)
        except TimeoutError:
            pass
        except CONNECTION_ERRORS as exc:
            self.lost(exc)
            return
        try:
            self.conn.heartbeat_tick()
        except CONNECTION_ERRORS as exc:
            self.lost(exc)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def make_amqp_message(body: bytes) -> amqp.Message:
    """The AMQP message sr3 accepts as v03: JSON content type, persistent, no headers."""
    return amqp.Message(
        body,
        content_type=JSON_CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
    )


class Broker(_Connection):
    """Publishing side: one channel in publisher-confirm mode."""

    def __init__(self, url: str | BrokerURL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._declared: set[str] = set()
        self._next_tag = 1
        self._status: dict[int, bool] = {}
        self._acked_upto = 0

    def _setup_channel(self) -> None:
        self._declared = set()
        self._next_tag = 1
        self._status = {}
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.confirm_select()

    def _settle(self, tag: int, multiple: bool, ok: bool) -> None:
        if multiple:
            for t in [t for t in self._status if t <= tag]:
                self._status[t] = ok
        elif tag in self._status:
            self._status[tag] = ok

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, True)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, False)

    def declare_exchange(self, name: str) -> None:
        """Declare a durable, non-auto-delete topic exchange (once per connection)."""
        if name in self._declared:
            return
        self.connect()
        try:
            self.channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
        except CONNECTION_ERRORS as exc:
            self.lost(exc)
            raise BrokerUnavailable(f"declaring exchange {name}: {_describe(exc)}") from exc
        self._declared.add(name)

    def publish_batch(
        self,
        items: Sequence[tuple[str, str, bytes]],
        *,
        confirm_timeout: float = 30.0,
        declare: bool = True,
    ) -> int:
        """Publish (exchange, routing_key, body) items and wait for the broker's confirms.

        Returns the length of the prefix of `items` that the broker confirmed: all of them
        normally, fewer if the broker nacked one (the rest should be sent again, in order).
        Raises `BrokerUnavailable(confirmed=k)` if the connection failed or the confirms did
        not come within `confirm_timeout`; the connection is then dropped.
        """
        if not items:
            return 0
        self.connect()
        tags: list[int] = []
        try:
            if declare:
                for exchange in {ex for ex, _, _ in items}:
                    self.declare_exchange(exchange)
            for exchange, key, body in items:
                tag = self._next_tag
                self._next_tag += 1
                self._status[tag] = None  # type: ignore[assignment]
                tags.append(tag)
                self.channel.basic_publish(make_amqp_message(body), exchange, key)
            deadline = time.monotonic() + confirm_timeout
            while any(self._status[t] is None for t in tags):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no confirm within {confirm_timeout}s")
                try:
                    self.conn.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    self.conn.heartbeat_tick()
        except (BrokerUnavailable, *CONNECTION_ERRORS) as exc:
            confirmed = self._confirmed_prefix(tags)
            self._forget(tags)
            if not isinstance(exc, BrokerUnavailable):
                self.lost(exc)
            raise BrokerUnavailable(f"publishing: {_describe(exc)}", confirmed) from exc
        confirmed = self._confirmed_prefix(tags)
        self._forget(tags)
        if confirmed < len(items):
            self.logger.warning(
                "broker %s: nacked message %d of a batch of %d", self.url, confirmed + 1, len(items)
            )
        return confirmed

    def publish(self, exchange: str, routing_key: str, body: bytes, **kwargs: Any) -> bool:
        """Publish one message and wait for its confirm; True if acked."""
        return self.publish_batch([(exchange, routing_key, body)], **kwargs) == 1

    def _confirmed_prefix(self, tags: list[int]) -> int:
        n = 0
        for t in tags:
            if self._status.get(t) is not True:
                break
            n += 1
        return n

    def _forget(self, tags: list[int]) -> None:
        for t in tags:
            self._status.pop(t, None)


@dataclass
class Delivery:
    """A message received from a queue. `ack()`/`reject()` exactly once."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str | None
    properties: dict[str, Any]
    delivery_tag: int
    redelivered: bool
    _consumer: Consumer
    _generation: int

    def message(self) -> dict[str, Any]:
        """The body decoded and validated as v03; raises `MessageError`."""
        return decode(self.body, self.content_type)

    def ack(self) -> None:
        self._consumer._settle(self, ack=True)

    def reject(self, requeue: bool = False) -> None:
        self._consumer._settle(self, ack=False, requeue=requeue)


class Consumer(_Connection):
    """Consuming side: a durable queue, its bindings, a prefetch window and explicit acks.

    `bindings` are (exchange, binding key) pairs, e.g. `("xpublic", "v03.#")`. The exchanges
    must exist (posters declare them) unless `declare_exchanges` is set. After a reconnect,
    deliveries not yet acknowledged come back (at least once): ack() of a stale delivery is
    ignored. Call `get` (or `tick`) at least every `heartbeat / 2` seconds, or the broker
    closes the connection as dead.
    """

    def __init__(
        self,
        url: str | BrokerURL,
        queue: str,
        bindings: Sequence[tuple[str, str]],
        *,
        prefetch: int = 25,
        declare_exchanges: bool = False,
        queue_arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self.queue = queue
        self.bindings = list(bindings)
        self.prefetch = prefetch
        self.declare_exchanges = declare_exchanges
        self.queue_arguments = queue_arguments or {}
        self._pending: collections.deque[Delivery] = collections.deque()
        self._generation = 0

    def _setup_channel(self) -> None:
        self._generation += 1
        self._pending.clear()
        ch = self.channel
        if self.declare_exchanges:
            for exchange in {ex for ex, _ in self.bindings}:
                ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        ch.queue_declare(
            self.queue, durable=True, auto_delete=False, arguments=self.queue_arguments
        )
        for exchange, key in self.bindings:
            ch.queue_bind(self.queue, exchange, key)
        ch.basic_qos(0, self.prefetch, False)
        ch.basic_consume(self.queue, callback=self._on_message, no_ack=False)

    def declare(self) -> None:
        """Create the queue and its bindings now (so that messages published from now on are
        kept even before the first `get`)."""
        self.connect()

    def _on_message(self, msg: amqp.Message) -> None:
        info = msg.delivery_info
        body = msg.body
        if isinstance(body, str):
            # py-amqp decodes the body when content_encoding is set; keep the wire bytes.
            body = body.encode(msg.properties.get("content_encoding") or "utf-8")
        self._pending.append(
            Delivery(
                exchange=info.get("exchange", ""),
                routing_key=info.get("routing_key", ""),
                body=bytes(body),
                content_type=msg.properties.get("content_type"),
                properties=dict(msg.properties),
                delivery_tag=info["delivery_tag"],
                redelivered=bool(info.get("redelivered")),
                _consumer=self,
                _generation=self._generation,
            )
        )

    def get(self, timeout: float, stop: threading.Event | None = None) -> Delivery | None:
        """The next delivery, waiting up to `timeout` seconds (reconnecting if needed)."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            if stop is not None and stop.is_set():
                return None
            if not self.connected and not self.connect_with_backoff(stop, deadline):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.conn.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                try:
                    self.conn.heartbeat_tick()
                except CONNECTION_ERRORS as exc:
                    self.lost(exc)
            except CONNECTION_ERRORS as exc:
                self.lost(exc)
        return self._pending.popleft()

    def iter_messages(
        self, timeout: float, stop: threading.Event | None = None
    ) -> Iterator[tuple[Delivery, dict[str, Any] | MessageError]]:
        """Yield (delivery, message or the MessageError it raised) until `timeout` passes
        with nothing received."""
        while True:
            d = self.get(timeout, stop)
            if d is None:
                return
            try:
                yield d, d.message()
            except MessageError as exc:
                yield d, exc

    def _settle(self, d: Delivery, *, ack: bool, requeue: bool = False) -> None:
        if d._generation != self._generation or not self.connected:
            # The channel it came on is gone; the broker will deliver it again.
            self.logger.debug("dropping ack of delivery %d from a closed channel", d.delivery_tag)
            return
        try:
            if ack:
                self.channel.basic_ack(d.delivery_tag)
            else:
                self.channel.basic_reject(d.delivery_tag, requeue)
        except CONNECTION_ERRORS as exc:
            self.lost(exc)

    def purge(self) -> int:
        """Delete the messages waiting in the queue (tests, resets); returns how many."""
        self.connect()
        return self.channel.queue_purge(self.queue) or 0

    def delete_queue(self) -> None:
        """Delete the queue on the broker (the counterpart of sr3 cleanup)."""
        self.connect()
        self.channel.queue_delete(self.queue)
        self.close()
