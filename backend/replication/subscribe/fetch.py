"""Fetching announced data for `reelfs subscribe`: HTTP(S) with Range, `file:` URLs, and
the byte-rate limit shared by all streams of a subscription.

* `http(s)://`: one keep-alive connection per thread and server; basic auth with the
  password the credentials file holds for that scheme, host and port (a user named in
  the baseUrl selects the entry; the password is sent at once, not after a 401);
  `Range: bytes=N-` (or `N-M` for a part) with `If-Range` on the ETag of the first
  response, so a resumed download never splices two versions of a file.
* `file:`: sr3's local posts (`baseUrl file:/srv/data`). Only under the configured
  `file_url_roots`: a network message must not make the subscriber copy any local file
  it can read into the archive.

Errors are `FetchError` with an HTTP-like `code` and whether retrying can help: 404/410
are final (the data is gone: a later message says what became of it), 503 carries the
server's Retry-After (a file being recalled from tape), connection failures are retried.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from backend.replication.credentials import Credentials, redact_url

CHUNK = 256 * 1024


class FetchError(Exception):
    """A transfer failed. `retry` says whether another attempt may succeed; `retry_after`
    is the server's hint in seconds."""

    def __init__(
        self, code: int, message: str, *, retry: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry
        self.retry_after = retry_after


class RateLimiter:
    """A token bucket shared by threads: `take(n)` returns once n bytes may pass.

    The bucket holds at most a quarter of a second of traffic, so a burst after an idle
    period stays short, and the long-run rate is `rate` bytes per second (0: unlimited).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.capacity = max(4096.0, rate / 4)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def chunk(self) -> int:
        """A read size that keeps the limit smooth."""
        if not self.rate:
            return CHUNK
        return int(max(4096, min(CHUNK, self.rate // 8)))

    def take(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


@dataclass
class Body:
    """An open download: data from `start` (the offset actually served), `total` bytes in
    the whole remote file when known, the ETag for resuming."""

    start: int
    total: int | None
    etag: str | None
    _chunks: Iterator[bytes]
    _close: object

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close = self._close
        if callable(close):
            close()


def build_url(base_url: str, rel_path: str, retrieve_path: str | None = None) -> str:
    """baseUrl + "/" + relPath (or retrievePath) as sr3 joins them, percent-encoding the
    path part for HTTP (relPath travels raw in v03; retrievePath may carry a query)."""
    base = base_url.rstrip("/")
    if base.lower().startswith(("http:", "https:")):
        if retrieve_path:
            tail = quote(retrieve_path.lstrip("/"), safe="/?&=%:;,+@~", errors="surrogateescape")
        else:
            # a byte that is not UTF-8 (\udcNN in the message) is sent as itself: %NN
            tail = quote(rel_path.lstrip("/"), safe="/", errors="surrogateescape")
    else:
        tail = (retrieve_path or rel_path).lstrip("/")
    return base + "/" + tail


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


class Fetcher:
    """Opens announced data for reading; one instance serves all threads."""

    def __init__(
        self,
        credentials: Credentials | None,
        *,
        file_roots: list[Path] | None = None,
        timeout: float = 120.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.credentials = credentials
        self.file_roots = [str(p) for p in file_roots or []]
        self.timeout = timeout
        self.limiter = limiter or RateLimiter(0)
        self._local = threading.local()

    def open(
        self,
        url: str,
        offset: int = 0,
        length: int | None = None,
        *,
        if_range: str | None = None,
    ) -> Body:
        """Bytes of `url` from `offset` (`length` of them, or to the end)."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return self._open_http(url, offset, length, if_range)
        if scheme == "file":
            return self._open_file(url, offset, length)
        raise FetchError(422, f"cannot fetch {scheme}: URLs", retry=False)

    # -- file: ---------------------------------------------------------------------------

    def _open_file(self, url: str, offset: int, length: int | None) -> Body:
        # sr3 writes file:/abs/dir (or file:///abs/dir); the relPath part is raw text.
        path = url[len("file:") :]
        if path.startswith("//"):
            path = path[2:]
            path = path[path.index("/") :] if "/" in path else "/"
        path = unquote(path) if "%" in path.split("/", 1)[0] else path
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.file_roots):
            raise FetchError(
                403, f"file: URL {path} is outside file_url_roots: refused", retry=False
            )
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FetchError(404, f"{path}: no such file", retry=False) from None
        except OSError as exc:
            raise FetchError(499, f"{path}: {exc.strerror}", retry=True) from None
        f: BinaryIO = os.fdopen(fd, "rb")
        total = os.fstat(fd).st_size
        f.seek(offset)
        chunks = _limited(f.read, self.limiter.chunk(), length, self.limiter)
        return Body(offset, total, None, chunks, f.close)

    # -- http(s): ------------------------------------------------------------------------

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        cache = getattr(self._local, "conns", None)
        if cache is None:
            cache = self._local.conns = {}
        key = (scheme, host, port)
        conn = cache.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            cache[key] = conn
        return conn

    def _drop(self, scheme: str, host: str, port: int | None) -> None:
        cache = getattr(self._local, "conns", {})
        conn = cache.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}

    def _auth(self, parts) -> str | None:
        if parts.password is not None and parts.username:
            user, password = unquote(parts.username), unquote(parts.password)
        else:
            if self.credentials is None:
                return None
            entry = self.credentials.lookup(
                parts.scheme,
                unquote(parts.username) if parts.username else None,
                parts.hostname or "",
                parts.port,
            )
            if entry is None:
                return None
            user, password = entry.user, entry.password
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return "Basic " + token

    def _open_http(self, url: str, offset: int, length: int | None, if_range: str | None) -> Body:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": "reelfs-subscribe/1", "Accept-Encoding": "identity"}
        auth = self._auth(parts)
        if auth:
            headers["Authorization"] = auth
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
            if if_range:
                headers["If-Range"] = if_range
        shown = redact_url(url)
        for attempt in (1, 2):
            conn = self._connection(scheme, host, parts.port)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # a kept-alive connection the server closed meanwhile: one fresh try
                self._drop(scheme, host, parts.port)
                if attempt == 2:
                    raise FetchError(499, f"{shown}: {exc}", retry=True) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(scheme, host, parts.port)
                raise FetchError(499, f"{shown}: {exc or type(exc).__name__}", retry=True) from None
        status = resp.status
        if status in (200, 206):
            return self._body(resp, url, offset, length, if_range, (scheme, host, parts.port))
        body = resp.read(4096)
        resp.close()
        if resp.will_close:
            self._drop(scheme, host, parts.port)
        del body
        if status == 416:
            m = _UNSATISFIED.match(resp.getheader("Content-Range") or "")
            if m and int(m.group(1)) == offset:
                # everything was there already (killed after the last byte, before rename)
                return Body(offset, offset, resp.getheader("ETag"), iter(()), None)
            raise FetchError(499, f"{shown}: 416 range not satisfiable", retry=True)
        if status in (404, 410):
            raise FetchError(status, f"{shown}: {status} {resp.reason}", retry=False)
        retry_after = _retry_after(resp.getheader("Retry-After"))
        if status in (429, 503):
            raise FetchError(
                503, f"{shown}: {status} {resp.reason}", retry=True, retry_after=retry_after
            )
        if status in (401, 403):
            raise FetchError(403, f"{shown}: {status} {resp.reason} (credentials?)", retry=True)
        raise FetchError(499, f"{shown}: {status} {resp.reason}", retry=True)

    def _body(
        self,
        resp: http.client.HTTPResponse,
        url: str,
        offset: int,
        length: int | None,
        if_range: str | None,
        conn_key: tuple[str, str, int | None],
    ) -> Body:
        shown = redact_url(url)
        etag = resp.getheader("ETag")
        skip = 0
        if resp.status == 206:
            m = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if not m or int(m.group(1)) != offset:
                resp.close()
                self._drop(*conn_key)
                raise FetchError(499, f"{shown}: bad Content-Range in 206", retry=True)
            start = offset
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            cl = resp.getheader("Content-Length")
            total = int(cl) if cl and cl.isdigit() else None
            if offset and if_range is None:
                # the server ignored Range: read past what was not asked for
                skip, start = offset, offset
            else:
                # ignored Range, or If-Range failed (the file changed): all from byte 0
                start = 0
                length = None
        step = self.limiter.chunk()
        limiter = self.limiter

        def chunks() -> Iterator[bytes]:
            to_skip = skip
            try:
                while to_skip:
                    data = resp.read(min(step, to_skip))
                    if not data:
                        return
                    to_skip -= len(data)
                yield from _limited(resp.read, step, length, limiter)
            except (OSError, http.client.HTTPException) as exc:
                self._drop(*conn_key)
                raise FetchError(499, f"{shown}: {exc or 'read failed'}", retry=True) from None

        def close() -> None:
            if not resp.isclosed():
                # unread data left: this connection cannot carry another request
                resp.close()
                self._drop(*conn_key)

        return Body(start, total, etag, chunks(), close)


def _limited(
    read: Callable[[int], bytes], step: int, length: int | None, limiter: RateLimiter
) -> Iterator[bytes]:
    """`length` bytes (or all) from `read`, `step` at a time, at the limiter's pace."""
    left = length
    while left is None or left > 0:
        data = read(step if left is None else min(step, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        limiter.take(len(data))
        yield data


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
