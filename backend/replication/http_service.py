"""Read-only HTTP/1.1 data service: what a v03 `baseUrl` of `http://...` points at.

Subscribers (stock sr3 or reelfs) download `baseUrl/relPath` from here. The server knows
nothing about archives: it reads through a `DataSource`, which the archive implements (a
released file raises `NotCached` until it is recalled from tape) and which
`DirectorySource` implements for plain directories.

Behaviour: GET and HEAD only; single `Range` requests (206, or 416 with `Content-Range:
bytes */size`; several ranges get the whole file, as RFC 9110 allows); strong `ETag`,
`Last-Modified`, `If-None-Match`, `If-Modified-Since`, `If-Range`; a file that must be
recalled is waited for up to `recall_wait` seconds, then answered `503` with
`Retry-After`; request paths are confined to the source (`..`, NUL, encoded tricks and
symlinks leading out give 400/404); optional HTTP basic auth; an access log without
credentials.

Why the standard library: `ThreadingHTTPServer` gives one thread per connection, which is
what a recall wait needs (it blocks that client only), file bodies go out with
`socket.sendfile` (zero copy), and there is no dependency to install on archive hosts. A
bound on concurrent connections keeps a flood of recall waits from exhausting threads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import mimetypes
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from backend.names import from_bytes

from .credentials import redact_url
from .message import MessageError, safe_join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileStat:
    """What the server needs to know about a path. `etag` is material for the ETag (e.g.
    a checksum, or inode+size+mtime); empty means size and mtime."""

    size: int
    mtime_ns: int
    is_dir: bool = False
    etag: str = ""


class NotCached(Exception):
    """The file is on tape only; a recall has been requested. `retry_after` is the source's
    estimate, in seconds, of when it will be readable."""

    def __init__(self, retry_after: float = 60.0) -> None:
        super().__init__(f"not cached, retry after {retry_after:.0f}s")
        self.retry_after = retry_after


class DataSource(Protocol):
    """The read-only view of a tree that the server exposes.

    `relpath` is `/`-separated, relative, already checked for `..` and NUL; the source must
    still keep it inside its tree (symlinks). Methods may block: each request has a thread.
    """

    def stat(self, relpath: str) -> FileStat | None:
        """Metadata, or None if the path does not exist (or is not to be served)."""

    def open(self, relpath: str) -> BinaryIO:
        """A binary file object positioned at 0; raises `NotCached` if it must be recalled
        first, `FileNotFoundError`/`PermissionError` otherwise."""

    def wait_cached(self, relpath: str, timeout: float) -> bool:
        """Wait until `open` would succeed; True if it will, False on timeout."""


class DirectorySource:
    """A plain directory as a `DataSource` (tests, `reelfs watch`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)

    def _path(self, relpath: str) -> str | None:
        try:
            return str(safe_join(self.root, relpath))
        except MessageError:
            return None

    def stat(self, relpath: str) -> FileStat | None:
        path = self._path(relpath)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return None
        return FileStat(
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            is_dir=stat.S_ISDIR(st.st_mode),
            etag=f"{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}",
        )

    def open(self, relpath: str) -> BinaryIO:
        path = self._path(relpath)
        if path is None:
            raise FileNotFoundError(relpath)
        # The path is fully resolved: a link appearing at the last step now is refused.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(fd, "rb")

    def wait_cached(self, relpath: str, timeout: float) -> bool:
        return True


Authenticator = Callable[[str, str], bool]


def _authenticator(auth: Mapping[str, str] | Authenticator | None) -> Authenticator | None:
    if auth is None or callable(auth):
        return auth  # type: ignore[return-value]
    users = dict(auth)

    def check(user: str, password: str) -> bool:
        expected = users.get(user)
        # Compare even for unknown users so timing does not reveal which users exist.
        ok = hmac.compare_digest(
            (expected or "\x00invalid").encode("utf-8"), password.encode("utf-8")
        )
        return expected is not None and ok

    return check


class _BadRequest(Exception):
    """A request that cannot be answered with data (400)."""


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests: GET and HEAD of the data source, with Range."""

    protocol_version = "HTTP/1.1"
    server_version = "reelfs-data/1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections give their thread back
    server: _Server

    # -- logging (never the Authorization header, never a password in a URL) ---------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Called when the status line goes out; the line is logged once the body is sent.
        self._code = code.value if isinstance(code, HTTPStatus) else code

    def handle_one_request(self) -> None:
        self._code = None
        super().handle_one_request()
        if self._code is not None:
            self.server.logger.info(
                '%s "%s %s" %s %s%s',
                self.client_address[0],
                getattr(self, "command", None) or "-",
                redact_url(getattr(self, "path", "-"))[:1000],
                self._code,
                self._sent,
                f" user={self._user}" if self._user else "",
            )

    def log_error(self, format: str, *args: object) -> None:
        self.server.logger.debug("http: " + format, *args)

    def log_message(self, format: str, *args: object) -> None:
        self.server.logger.debug("http: " + format, *args)

    # -- request handling --------------------------------------------------------------

    def setup(self) -> None:
        self._sent = 0
        self._user = ""
        self._code: int | str | None = None
        super().setup()

    def parse_request(self) -> bool:
        # One connection carries several requests: per-request log fields start afresh.
        self._sent = 0
        self._user = ""
        return super().parse_request()

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self._simple(HTTPStatus.METHOD_NOT_ALLOWED, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _simple(
        self, status: HTTPStatus, text: str = "", extra: Mapping[str, str] | None = None
    ) -> None:
        body = (text or f"{status.value} {status.phrase}\n").encode("utf-8")
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent = len(body)

    def _check_auth(self) -> bool:
        check = self.server.authenticate
        if check is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if user and check(user, password):
                self._user = user
                return True
        self._simple(HTTPStatus.UNAUTHORIZED, extra={"WWW-Authenticate": 'Basic realm="reelfs"'})
        return False

    def _relpath(self) -> str | None:
        """The source-relative path of the request, None for not found; raises _BadRequest."""
        target = self.path
        if "://" in target.split("?", 1)[0]:
            target = urlsplit(target).path or "/"
        path = target.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            raise _BadRequest("request target must be an absolute path")
        raw = unquote_to_bytes(path)
        if b"\x00" in raw:
            raise _BadRequest("NUL in path")
        text = from_bytes(raw)  # the name's bytes, whatever this process's locale
        prefix = self.server.url_prefix
        if text + "/" == prefix:
            text = prefix
        if not text.startswith(prefix):
            return None
        parts = text[len(prefix) :].split("/")
        if any(p == ".." for p in parts):
            return None
        parts = [p for p in parts if p not in ("", ".")]
        return "/".join(parts)

    def _serve(self, head: bool) -> None:
        if not self._check_auth():
            return
        try:
            rel = self._relpath()
        except _BadRequest as exc:
            self._simple(HTTPStatus.BAD_REQUEST, f"400 Bad Request: {exc}\n")
            return
        source = self.server.source
        if rel is None:
            self._simple(HTTPStatus.NOT_FOUND)
            return
        st = source.stat(rel) if rel else FileStat(0, 0, is_dir=True)
        if st is None:
            self._simple(HTTPStatus.NOT_FOUND)
            return
        if st.is_dir:
            self._simple(HTTPStatus.FORBIDDEN, "403 Forbidden: directory listing disabled\n")
            return
        etag = _etag(st)
        last_modified = formatdate(st.mtime_ns / 1e9, usegmt=True)
        validators = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes"}
        if _not_modified(self.headers, etag, st.mtime_ns):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for k, v in validators.items():
                self.send_header(k, v)
            self.end_headers()
            return
        start, end = 0, st.size - 1
        status = HTTPStatus.OK
        range_header = self.headers.get("Range")
        if range_header and _if_range_ok(self.headers.get("If-Range"), etag, st.mtime_ns):
            parsed = _parse_range(range_header, st.size)
            if parsed == "unsatisfiable":
                self._simple(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    extra={"Content-Range": f"bytes */{st.size}", **validators},
                )
                return
            if parsed is not None:
                start, end = parsed
                status = HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1 if st.size else 0
        f = None
        if not head:
            f = self._open(rel)
            if f is None:
                return
        try:
            self.send_response(status)
            ctype = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{st.size}")
            for k, v in validators.items():
                self.send_header(k, v)
            self.end_headers()
            if f is not None and length:
                self.wfile.flush()
                sent = self.connection.sendfile(f, start, length)
                self._sent = sent
                if sent != length:
                    # The file shrank under us: the length promised cannot be honoured.
                    self.close_connection = True
        finally:
            if f is not None:
                f.close()

    def _open(self, rel: str) -> BinaryIO | None:
        source = self.server.source
        try:
            try:
                return source.open(rel)
            except NotCached as first:
                retry_after = first.retry_after
                if source.wait_cached(rel, self.server.recall_wait):
                    try:
                        return source.open(rel)
                    except NotCached as again:
                        retry_after = again.retry_after
                self._simple(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: the file is being recalled from tape\n",
                    extra={"Retry-After": str(max(1, math.ceil(retry_after)))},
                )
                return None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._simple(HTTPStatus.NOT_FOUND)
        except PermissionError:
            self._simple(HTTPStatus.FORBIDDEN)
        except OSError as exc:
            if exc.errno == getattr(os, "ELOOP", None):
                self._simple(HTTPStatus.NOT_FOUND)
            else:
                self.server.logger.warning("http: reading %r failed: %s", rel, exc)
                self._simple(HTTPStatus.INTERNAL_SERVER_ERROR)
        return None


def _etag(st: FileStat) -> str:
    material = st.etag or f"{st.size}-{st.mtime_ns}"
    return '"' + hashlib.blake2b(material.encode(), digest_size=12).hexdigest() + '"'


def _etag_list(value: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in value.split(",") if t.strip()]


def _not_modified(headers: Mapping[str, str], etag: str, mtime_ns: int) -> bool:
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = _etag_list(inm)
        return "*" in tags or etag in tags
    ims = headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError):
            return False
        return mtime_ns // 1_000_000_000 <= since
    return False


def _if_range_ok(value: str | None, etag: str, mtime_ns: int) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison only
    try:
        return mtime_ns // 1_000_000_000 == int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return False


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive, "unsatisfiable", or None to ignore the header."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            suffix = int(last)
            if suffix == 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if end < start and last:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    """A thread per connection, none of them keeping the process alive."""

    daemon_threads = True
    allow_reuse_address = True

    source: DataSource
    authenticate: Authenticator | None
    recall_wait: float
    url_prefix: str
    logger: logging.Logger

    def __init__(self, address: tuple[str, int], family: int, max_connections: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active.discard(request)
            self._slots.release()

    def close_connections(self) -> None:
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DataServer:
    """A running data service (see `serve`)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL to put in `post_base_url` (includes the URL prefix)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self._server.url_prefix}"

    def shutdown(self) -> None:
        """Stop accepting, close open connections, and wait for the serving thread."""
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> DataServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def parse_listen(listen: str) -> tuple[str, int, int]:
    """`host:port` or `[v6]:port` -> (host, port, address family)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), socket.AF_INET6
    return host or "127.0.0.1", int(port), socket.AF_INET


def serve(
    source: DataSource,
    listen: str = "127.0.0.1:0",
    *,
    auth: Mapping[str, str] | Authenticator | None = None,
    recall_wait: float = 20.0,
    url_prefix: str = "/",
    max_connections: int = 64,
    logger: logging.Logger = log,
) -> DataServer:
    """Serve `source` on `listen` (port 0 picks a free one) in a background thread.

    `auth` is a user -> password mapping (see `Credentials.http_users`) or a
    `check(user, password) -> bool`; None serves without authentication. `url_prefix` is
    the URL path the source's root appears at (e.g. the poster's `post_base_dir`, so that
    sr3 subscribers can map `fileOp.rename` paths).
    """
    host, port, family = parse_listen(listen)
    server = _Server((host, port), family, max_connections)
    server.source = source
    server.authenticate = _authenticator(auth)
    server.recall_wait = recall_wait
    prefix = "/" + url_prefix.strip("/")
    server.url_prefix = prefix if prefix == "/" else prefix + "/"
    server.logger = logger
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="reelfs-http", daemon=True
    )
    thread.start()
    return DataServer(server, thread)
