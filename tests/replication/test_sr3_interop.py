"""Interoperability with stock Sarracenia (metpx-sr3) through the private RabbitMQ.

(a) `sr3 subscribe` mirrors, byte for byte, a tree that our `watch` announces with
    `post_base_url` pointing at our HTTP data service (basic auth from sr3's credentials
    file), including a rename and a removal;
(b) what `sr3 post` and `sr3 watch` publish is parsed and validated by `message.py` and
    fetched from our HTTP data service.

sr3 runs with its state in a temporary HOME. `sr3 foreground` starts an `instance.py`
child and does not pass SIGTERM on to it, so each sr3 run is started in a session of its
own and stopped through that process group (which holds only what the test started).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backend.replication import message as m
from backend.replication.broker import Broker
from backend.replication.credentials import Credentials
from backend.replication.http_service import DirectorySource, serve
from backend.replication.identity import identity_of_chunks, identity_of_file
from backend.replication.watch_config import load_config
from backend.replication.watch_service import WatchService
from tests.ports import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def _sr3_usable() -> str | None:
    """None if sr3 can run here, else why not."""
    if shutil.which("sr3") is None:
        return "metpx-sr3 is not installed (pip install metpx-sr3 paramiko)"
    probe = subprocess.run(
        [sys.executable, "-c", "import sarracenia.flow"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        # sr3 3.3.1 imports paramiko whenever boto3 is installed.
        return "sr3 cannot start: " + probe.stderr.strip().splitlines()[-1]
    return None


@pytest.fixture
def sr3(tmp_path, broker):
    why = _sr3_usable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    home = tmp_path / "sr3home"
    conf = home / ".config" / "sr3"
    conf.mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        # sr3 puts USER in queue names and matches it against the real user (team notes).
        "USER": getpass.getuser(),
        "LANG": "C.UTF-8",
    }
    for key in ("PYENV_ROOT", "PYENV_VERSION", "VIRTUAL_ENV", "PYTHONPATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    runner = Sr3(home, conf, env)
    runner.add_credentials(broker.credentials_path.read_text())
    yield runner
    runner.stop_all()


class Sr3:
    """Writes sr3 configs into a private HOME and runs sr3, tracking what it started."""

    def __init__(self, home: Path, conf: Path, env: dict[str, str]) -> None:
        self.home, self.conf, self.env = home, conf, env
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def add_credentials(self, text: str) -> None:
        path = self.conf / "credentials.conf"
        old = path.read_text() if path.exists() else ""
        path.write_text(old + text)
        path.chmod(0o600)

    def config(self, component: str, name: str, lines: list[str]) -> None:
        d = self.conf / component
        d.mkdir(exist_ok=True)
        (d / f"{name}.conf").write_text("\n".join(lines) + "\n")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sr3", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> Path:
        log = self.home / f"{'_'.join(args).replace('/', '_')}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["sr3", *args],
                env=self.env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return log

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # the instance child exits with its group; make sure none is left
            wait_for(lambda pid=proc.pid: _group_empty(pid), timeout=20, what="sr3 stopped")


def _group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _same_tree(src: Path, dst: Path, rels: list[str]) -> bool:
    return all(
        (dst / r).is_file() and (dst / r).read_bytes() == (src / r).read_bytes() for r in rels
    )


def test_sr3_subscribe_mirrors_what_watch_posts(broker, names, sr3, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "x").mkdir()
    files = {
        "d/one.txt": b"hello world\n",
        "big.bin": os.urandom(2_500_000),
        "x/with space.txt": b"spaces\n",
        "x/caf\u00e9.txt": b"accents\n",
        "x/odd#name*.txt": b"wildcards\n",
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    rx = tmp_path / "rx"
    rx.mkdir()
    exchange = names["exchange"]
    with Broker(broker.url("alice"), credentials=broker.credentials) as b:
        b.declare_exchange(exchange)  # sr3 subscribers bind, they do not declare

    http_port = free_port()
    sr3.add_credentials(f"http://reader:rpw{names['tag']}@127.0.0.1:{http_port}/\n")
    sr3.config(
        "subscribe",
        "rx",
        [
            f"broker {broker.url('alice')}",
            f"exchange {exchange}",
            "topicPrefix v03",
            "subtopic #",
            f"directory {rx}",
            "mirror on",
            "accept .*",
        ],
    )
    declared = sr3.run("declare", "subscribe/rx")
    assert declared.returncode == 0, declared.stdout + declared.stderr
    assert "q_alice.subscribe.rx." in declared.stdout + declared.stderr

    # our data service asks for basic auth; both sides find the password in their file
    creds = tmp_path / "watch-credentials.conf"
    creds.write_text(
        broker.credentials_path.read_text()
        + f"http://reader:rpw{names['tag']}@127.0.0.1:{http_port}/\n"
    )
    creds.chmod(0o600)
    cfg_file = tmp_path / "watch.toml"
    cfg_file.write_text(
        f'broker = "{broker.url("alice")}"\n'
        f'exchange = "{exchange}"\n'
        f'http_listen = "127.0.0.1:{http_port}"\n'
        "http_auth = true\n"
        # No user in the http baseUrl: sr3 then finds the password by host and port. With
        # `reader@` in it, sr3 3.3.1 sends no Authorization at all (urllib's password
        # manager is keyed on the authority including the user) and gets 401s.
        f'credentials = "{creds}"\n'
        f'post_base_url = "http://127.0.0.1:{http_port}{src.resolve()}"\n'
        "settle = 0.3\n"
    )
    cfg = load_config(cfg_file, src)
    svc = WatchService(cfg, Credentials.load(cfg.credentials))
    svc.start()
    try:
        # anonymous requests are refused
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _fetch(f"http://127.0.0.1:{http_port}{src.resolve()}/d/one.txt")
        sr3.start("foreground", "subscribe/rx")
        wait_for(lambda: _same_tree(src, rx, list(files)), timeout=60, what="sr3 mirror")
        got = os.stat(rx / "d" / "one.txt").st_mtime_ns
        assert abs(got - os.stat(src / "d" / "one.txt").st_mtime_ns) < 1_000_000  # timeCopy

        os.rename(src / "d" / "one.txt", src / "d" / "two.txt")
        (src / "big.bin").unlink()
        (src / "late.txt").write_bytes(b"late\n")
        wait_for(
            lambda: (
                _same_tree(src, rx, ["d/two.txt", "late.txt"])
                and not (rx / "d" / "one.txt").exists()
                and not (rx / "big.bin").exists()
            ),
            timeout=90,
            what="sr3 applied rename and remove",
        )
    finally:
        sr3.stop_all()
        svc.stop()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_our_consumer_validates_and_fetches_sr3_posts(
    broker, names, sr3, consumer_factory, tmp_path
) -> None:
    exchange = names["exchange"]
    consumer = consumer_factory(exchange, names["queue"])
    src = tmp_path / "posted"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "p.txt").write_bytes(b"posted by sr3\n")
    (src / "q.bin").write_bytes(os.urandom(300_000))
    watched = tmp_path / "watched"
    watched.mkdir()
    with serve(DirectorySource(tmp_path), "127.0.0.1:0", url_prefix=str(tmp_path)) as http:
        base = http.url.rstrip("/")
        sr3.config(
            "post",
            "p",
            [
                f"post_broker {broker.url('alice')}",
                f"post_exchange {exchange}",
                f"post_baseUrl {base}/posted",
                f"post_baseDir {src}",
                # one path per line: sr3 reads "path a b" as a single name
                f"path {src / 'sub' / 'p.txt'}",
                f"path {src / 'q.bin'}",
            ],
        )
        posted = sr3.run("foreground", "post/p")
        assert posted.returncode == 0, posted.stdout + posted.stderr
        seen = {}
        while len(seen) < 2:
            d = consumer.get(30)
            assert d is not None, "sr3 post published nothing we could receive"
            d.ack()
            msg = d.message()  # parsed and validated, or MessageError
            assert d.routing_key == m.topic_for(msg["relPath"])
            seen[msg["relPath"]] = msg
        assert set(seen) == {"sub/p.txt", "q.bin"}
        for rel, msg in seen.items():
            m.parse_time(msg["pubTime"])
            assert msg["identity"] == identity_of_file(src / rel)
            mtime = os.stat(src / rel).st_mtime_ns
            assert abs(m.parse_time(msg["mtime"]) - mtime) < 1_000_000
            data = _fetch(m.download_url(msg))
            assert data == (src / rel).read_bytes()
            assert identity_of_chunks([data], msg["identity"]["method"]) == msg["identity"]
            assert m.safe_join(tmp_path / "mirror", msg["relPath"])

        # sr3 watch: files, directories, renames, removals
        sr3.config(
            "watch",
            "w",
            [
                f"post_broker {broker.url('alice')}",
                f"post_exchange {exchange}",
                f"post_baseUrl {base}/watched",
                f"post_baseDir {watched}",
                f"path {watched}",
                "fileAgeMin 1",
                "sleep 1",  # sr3 watch batches events per `sleep` cycle (default 5 s)
            ],
        )
        log = sr3.start("foreground", "watch/w")
        wait_for(
            lambda: "now active on" in log.read_text(errors="replace"),
            timeout=60,
            what="sr3 watch active",
        )
        (watched / "w.txt").write_bytes(b"watched file\n")
        msg = _next_about(consumer, "w.txt")
        assert _fetch(m.download_url(msg)) == b"watched file\n"
        (watched / "dir").mkdir()
        assert _next_about(consumer, "dir")["fileOp"] == {"directory": ""}
        os.rename(watched / "w.txt", watched / "dir" / "w2.txt")
        msg = _next_about(consumer, "dir/w2.txt")
        assert msg["fileOp"] == {"rename": str(watched / "w.txt")}
        assert m.rename_old_relpath(msg, str(watched)) == "w.txt"
        assert _fetch(m.download_url(msg)) == b"watched file\n"
        (watched / "dir" / "w2.txt").unlink()
        assert _next_about(consumer, "dir/w2.txt")["fileOp"] == {"remove": ""}


def _next_about(consumer, rel: str, timeout: float = 60.0) -> dict:
    """The next message about `rel` (sr3 watch may announce a file more than once)."""
    while True:
        d = consumer.get(timeout)
        assert d is not None, f"no message about {rel}"
        d.ack()
        msg = d.message()
        if msg["relPath"] == rel:
            return msg
