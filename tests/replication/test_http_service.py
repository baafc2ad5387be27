"""The read-only HTTP data service: ranges, validators, recall waits, confinement, auth."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import threading
from email.utils import formatdate

import pytest

from backend.replication.http_service import DirectorySource, NotCached, serve

DATA = bytes(range(256)) * 8  # 2048 bytes
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"


class RecallSource(DirectorySource):
    """A directory where some files are 'on tape': opening them needs a recall first."""

    def __init__(self, root, quick: set[str], stuck: set[str]) -> None:
        super().__init__(root)
        self.quick = set(quick)  # recalled within the wait
        self.stuck = set(stuck)  # never recalled in time
        self.recalls: list[str] = []
        self._never = threading.Event()

    def open(self, relpath: str):
        if relpath in self.quick or relpath in self.stuck:
            raise NotCached(retry_after=6.2)
        return super().open(relpath)

    def wait_cached(self, relpath: str, timeout: float) -> bool:
        self.recalls.append(relpath)
        if relpath in self.quick:
            self.quick.discard(relpath)  # the recall completes
            return True
        return self._never.wait(timeout)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "f.bin").write_bytes(DATA)
    (root / "a" / "g.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    (tmp_path / "secret").write_bytes(SECRET)
    os.symlink(tmp_path, root / "escape")
    os.symlink(tmp_path / "secret", root / "abs-link")
    os.symlink("a/g.txt", root / "inner-link")
    return root


@pytest.fixture
def server(tree):
    source = RecallSource(tree, quick={"a/g.txt"}, stuck={"f.bin"})
    srv = serve(source, "127.0.0.1:0", recall_wait=0.3)
    srv.source = source
    yield srv
    srv.shutdown()


@pytest.fixture
def plain(tree):
    srv = serve(DirectorySource(tree), "127.0.0.1:0")
    yield srv
    srv.shutdown()


def request(srv, method: str, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_get_head_and_validators(plain) -> None:
    status, h, body = request(plain, "GET", "/f.bin")
    assert status == 200 and body == DATA
    assert h["Content-Length"] == str(len(DATA))
    assert h["Accept-Ranges"] == "bytes"
    assert h["ETag"].startswith('"') and h["Last-Modified"].endswith("GMT")
    status, hh, body = request(plain, "HEAD", "/f.bin")
    assert status == 200 and body == b"" and hh["Content-Length"] == str(len(DATA))
    assert hh["ETag"] == h["ETag"]

    assert request(plain, "GET", "/f.bin", {"If-None-Match": h["ETag"]})[0] == 304
    assert request(plain, "GET", "/f.bin", {"If-None-Match": '"other", ' + h["ETag"]})[0] == 304
    assert request(plain, "GET", "/f.bin", {"If-None-Match": '"other"'})[0] == 200
    assert request(plain, "GET", "/f.bin", {"If-Modified-Since": h["Last-Modified"]})[0] == 304
    old = formatdate(0, usegmt=True)
    assert request(plain, "GET", "/f.bin", {"If-Modified-Since": old})[0] == 200
    status, _, body = request(plain, "GET", "/empty")
    assert status == 200 and body == b""


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, 2047),
        ("bytes=-5", 2043, 2047),
        ("bytes=2000-99999", 2000, 2047),
    ],
)
def test_single_ranges(plain, spec: str, start: int, end: int) -> None:
    status, h, body = request(plain, "GET", "/f.bin", {"Range": spec})
    assert status == 206
    assert h["Content-Range"] == f"bytes {start}-{end}/2048"
    assert h["Content-Length"] == str(end - start + 1)
    assert body == DATA[start : end + 1]


def test_unsatisfiable_and_ignored_ranges(plain) -> None:
    status, h, body = request(plain, "GET", "/f.bin", {"Range": "bytes=2048-"})
    assert status == 416 and h["Content-Range"] == "bytes */2048"
    assert request(plain, "GET", "/empty", {"Range": "bytes=0-"})[0] == 416
    for ignored in ("bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=x-"):
        status, _, body = request(plain, "GET", "/f.bin", {"Range": ignored})
        assert status == 200 and body == DATA, ignored


def test_if_range(plain) -> None:
    etag = request(plain, "HEAD", "/f.bin")[1]["ETag"]
    status, _, body = request(plain, "GET", "/f.bin", {"Range": "bytes=0-3", "If-Range": etag})
    assert status == 206 and body == DATA[:4]
    status, _, body = request(plain, "GET", "/f.bin", {"Range": "bytes=0-3", "If-Range": '"x"'})
    assert status == 200 and body == DATA


def test_keep_alive_serves_several_requests(plain) -> None:
    conn = http.client.HTTPConnection(plain.host, plain.port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/a/g.txt")
        resp = conn.getresponse()
        assert resp.read() == b"hello\n"
    conn.close()


def test_recall_wait_then_serve_or_503(server) -> None:
    status, _, body = request(server, "GET", "/a/g.txt")
    assert status == 200 and body == b"hello\n"
    status, h, body = request(server, "GET", "/f.bin")
    assert status == 503
    assert h["Retry-After"] == "7"  # ceil(6.2)
    assert DATA not in body
    assert server.source.recalls == ["a/g.txt", "f.bin"]
    # HEAD needs no data: no recall, just metadata
    status, h, _ = request(server, "HEAD", "/f.bin")
    assert status == 200 and h["Content-Length"] == "2048"
    assert server.source.recalls == ["a/g.txt", "f.bin"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../secret", 404),
        ("/%2e%2e/secret", 404),
        ("/a/%2E%2E/%2e%2e/secret", 404),
        ("/a/..%2f..%2fsecret", 404),
        ("/%252e%252e/secret", 404),
        ("//etc/passwd", 404),
        ("/escape/secret", 404),
        ("/abs-link", 404),
        ("/%00", 400),
        ("/a/g.txt%00.png", 400),
        ("http://evil.example/../secret", 404),
        ("relative/secret", 400),
        ("/%c0%ae%c0%ae/secret", 404),
    ],
)
def test_paths_confined_to_the_root(plain, path: str, status: int) -> None:
    got, _, body = request(plain, "GET", path)
    assert got == status
    assert SECRET not in body


def test_links_inside_the_root_are_served(plain) -> None:
    status, _, body = request(plain, "GET", "/inner-link")
    assert status == 200 and body == b"hello\n"


def test_directories_and_methods(plain) -> None:
    assert request(plain, "GET", "/a")[0] == 403
    assert request(plain, "GET", "/")[0] == 403
    status, h, _ = request(plain, "POST", "/f.bin")
    assert status == 405 and h["Allow"] == "GET, HEAD"
    assert request(plain, "DELETE", "/f.bin")[0] == 405


def test_url_prefix(tree) -> None:
    with serve(DirectorySource(tree), "127.0.0.1:0", url_prefix="/srv/data") as srv:
        assert srv.url.endswith("/srv/data/")
        assert request(srv, "GET", "/srv/data/a/g.txt")[2] == b"hello\n"
        assert request(srv, "GET", "/a/g.txt")[0] == 404
        assert request(srv, "GET", "/srv/database")[0] == 404


def test_basic_auth_and_access_log(tree, caplog) -> None:
    caplog.set_level(logging.INFO, logger="backend.replication.http_service")
    with serve(DirectorySource(tree), "127.0.0.1:0", auth={"reader": "s3cret"}) as srv:
        status, h, _ = request(srv, "GET", "/a/g.txt")
        assert status == 401 and h["WWW-Authenticate"].startswith("Basic")
        bad = base64.b64encode(b"reader:nope").decode()
        assert request(srv, "GET", "/a/g.txt", {"Authorization": f"Basic {bad}"})[0] == 401
        unknown = base64.b64encode(b"mallory:s3cret").decode()
        assert request(srv, "GET", "/a/g.txt", {"Authorization": f"Basic {unknown}"})[0] == 401
        good = base64.b64encode(b"reader:s3cret").decode()
        status, _, body = request(srv, "GET", "/a/g.txt", {"Authorization": f"Basic {good}"})
        assert status == 200 and body == b"hello\n"
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert '"GET /a/g.txt" 200 6 user=reader' in log_text
    assert '"GET /a/g.txt" 401' in log_text
    assert "s3cret" not in log_text and good not in log_text


def test_connection_limit_answers_503(tree) -> None:
    with serve(DirectorySource(tree), "127.0.0.1:0", max_connections=1) as srv:
        idle = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        idle.request("GET", "/a/g.txt")
        idle.getresponse().read()  # this keep-alive connection now holds the only slot
        status, h, _ = request(srv, "GET", "/a/g.txt")
        assert status == 503 and h["Retry-After"] == "5"
        idle.close()
