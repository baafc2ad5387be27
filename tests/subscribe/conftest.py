"""Fixtures for `reelfs subscribe` tests: mounted archives ("sites"), subscriber processes,
upstream HTTP data services, and report queues, on the session's private RabbitMQ
(`broker` in tests/conftest.py).

Every subscriber is a `reelfs subscribe` process of its own (as an operator runs it),
stopped by its PID at the end of the test; every mount is unmounted, or killed by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.replication import message as m
from backend.replication.broker import Broker, Consumer
from backend.replication.http_service import DataServer, DirectorySource, serve
from backend.replication.identity import identity_of_file
from tests.archive import Mount, init_archive, mount
from tests.brokers import REPO, BrokerHandle
from tests.ports import free_port
from tests.replication.test_sr3_interop import sr3  # noqa: F401  (stock sr3, for interop)
from tests.waiting import wait_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("/dev/fuse is missing: the subscribe tests cannot run")
        skip = pytest.mark.skip(reason="no /dev/fuse on this machine")
        for item in items:
            if "tests/subscribe/" in str(item.fspath) and "test_subscribe_units" not in str(
                item.fspath
            ):
                item.add_marker(skip)


def toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and lists of them are valid TOML
    return json.dumps(value)


def write_toml(path: Path, keys: dict[str, Any]) -> Path:
    lines, tables = [], []
    for k, v in keys.items():
        if isinstance(v, dict):
            tables.append(f"\n[{k}]")
            tables.extend(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
        else:
            lines.append(f"{k} = {toml_value(v)}")
    path.write_text("\n".join(lines + tables) + "\n")
    return path


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Site:
    """A mounted archive, posting (and serving) when configured."""

    name: str
    archive: Path
    mount: Mount
    exchange: str | None = None
    base_url: str | None = None

    @property
    def mnt(self) -> Path:
        return self.mount.mnt

    def events(self, kind: str) -> list[dict]:
        return self.mount.events(kind)


@pytest.fixture
def credentials_file(tmp_path: Path, broker: BrokerHandle) -> Path:
    """The broker's credentials (mode 600), to which tests may add http:// entries."""
    path = tmp_path / "credentials.conf"
    path.write_text(broker.credentials_path.read_text())
    path.chmod(0o600)
    return path


@pytest.fixture
def make_site(
    tmp_path: Path, broker: BrokerHandle, credentials_file: Path
) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(
        name: str,
        *,
        post_user: str | None = None,
        exchange: str | None = None,
        serve_http: bool = False,
        blocksize: str | None = None,
        to_clusters: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Site:
        opts: dict[str, Any] = dict(options or {})
        base_url = None
        if post_user is not None:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}/{name}"
            opts.update(
                {
                    "post.broker": broker.url(post_user),
                    "post.exchange": exchange,
                    "post.base_url": base_url,
                    "post.cluster": name,
                }
            )
            if blocksize:
                opts["post.blocksize"] = blocksize
            if to_clusters:
                opts["post.to_clusters"] = to_clusters
            if serve_http:
                opts.update({"serve.listen": f"127.0.0.1:{port}", "serve.url_prefix": f"/{name}"})
        archive = init_archive(tmp_path / name, options=opts, cache_size="512MiB")
        mnt = mount(
            archive, tmp_path / f"{name}-mnt", env={"REELFS_CREDENTIALS": str(credentials_file)}
        )
        site = Site(name, archive, mnt, exchange, base_url)
        sites.append(site)
        return site

    yield make
    for s in sites:
        s.mount.stop()


@dataclass
class SubscriberProc:
    """One `reelfs subscribe` process and its log."""

    config: Path
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    runs: list[int] = field(default_factory=list)

    def start(self, *extra: str) -> SubscriberProc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mountfs.cli",
                    "subscribe",
                    "--config",
                    str(self.config),
                    *extra,
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.runs.append(self.proc.pid)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        wait_for(
            lambda: self.text().count(needle) >= count,
            timeout=timeout,
            what=f"{needle!r} x{count} in {self.log.name}",
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


@pytest.fixture
def subscriber_factory(
    tmp_path: Path, broker: BrokerHandle, credentials_file: Path
) -> Iterator[Callable[..., SubscriberProc]]:
    made: list[SubscriberProc] = []

    def make(name: str, site: Site, *, start: bool = True, **keys: Any) -> SubscriberProc:
        cfg = {
            "broker": broker.url("admin"),
            "archive": str(site.archive),
            "cluster": site.name,
            "credentials": str(credentials_file),
            "retry": {"initial": 0.2, "maximum": 2.0, "attempts": 3},
            **keys,
        }
        path = write_toml(tmp_path / f"{name}.toml", cfg)
        env = {**os.environ, "REELFS_CREDENTIALS": str(credentials_file)}
        env.pop("REELFS_ARCHIVE", None)
        sub = SubscriberProc(path, tmp_path / f"{name}.log", env)
        made.append(sub)
        if start:
            sub.start()
            sub.wait_log("subscribed to")  # the queue exists: nothing posted now is lost
        return sub

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, DataServer]]]:
    """A plain directory served over HTTP, as another site's data service would."""
    servers: list[DataServer] = []

    def make(name: str = "up") -> tuple[Path, DataServer]:
        root = tmp_path / name
        root.mkdir()
        srv = serve(DirectorySource(root), "127.0.0.1:0", url_prefix=f"/{name}")
        servers.append(srv)
        return root, srv

    yield make
    for s in servers:
        s.shutdown()


class Poster:
    """Publishes hand-made v03 messages as one broker user (a source, or a pump)."""

    def __init__(self, broker: BrokerHandle, user: str, exchange: str) -> None:
        self.b = Broker(broker.url(user), credentials=broker.credentials)
        self.exchange = exchange
        self.b.declare_exchange(exchange)

    def post(self, msg: dict[str, Any]) -> None:
        assert self.b.publish(self.exchange, m.topic_for(msg["relPath"]), m.encode(msg))

    def raw(self, body: bytes, topic: str = "v03") -> None:
        assert self.b.publish(self.exchange, topic, body)

    def file(self, root: Path, base_url: str, rel: str, **extra: Any) -> dict[str, Any]:
        """Announce the file root/rel as a source would."""
        st = os.stat(root / rel)
        fields: dict[str, Any] = dict(
            base_url=base_url,
            rel_path=rel,
            identity=identity_of_file(root / rel),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            atime_ns=st.st_atime_ns,
            mode=st.st_mode,
        )
        fields.update(extra)
        msg = m.build_message(**fields)
        self.post(msg)
        return msg

    def close(self) -> None:
        self.b.close()


@pytest.fixture
def poster_factory(broker: BrokerHandle) -> Iterator[Callable[[str, str], Poster]]:
    made: list[Poster] = []

    def make(user: str, exchange: str) -> Poster:
        p = Poster(broker, user, exchange)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def queue_factory(broker: BrokerHandle) -> Iterator[Callable[..., Consumer]]:
    """Queues bound to exchanges declared by admin (reports, monitors); as any user."""
    made: list[Consumer] = []

    def make(user: str, exchange: str, key: str = "#") -> Consumer:
        with Broker(broker.url("admin"), credentials=broker.credentials) as admin:
            admin.declare_exchange(exchange)
        c = Consumer(
            broker.url(user),
            f"q_{user}.monitor.{uuid.uuid4().hex[:10]}",
            [(exchange, key)],
            credentials=broker.credentials,
            prefetch=1000,
        )
        c.declare()
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.delete_queue()
        except Exception:
            c.close()


def drain(consumer: Consumer, timeout: float = 0.5) -> list[dict]:
    """Every message waiting (and arriving within `timeout` of silence), decoded."""
    out = []
    while True:
        d = consumer.get(timeout)
        if d is None:
            return out
        d.ack()
        out.append(d.message())


def receive_until(
    consumer: Consumer, done: Callable[[list[dict]], bool], timeout: float = 60
) -> list[dict]:
    """Receive messages until `done(all so far)` holds; fail after `timeout` seconds."""
    import time

    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; received {[(x['relPath'], x.get('report')) for x in got]}"
        d = consumer.get(min(left, 1.0))
        if d is not None:
            d.ack()
            got.append(d.message())
    return got


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".reelfs-in.")]
