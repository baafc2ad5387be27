"""`reelfs serve ARCHIVE --listen HOST:PORT`: the read-only HTTP data service.

What a posted message's `baseUrl` points at. It runs beside the mount (or without it):
it reads the catalog and the cache directly and asks the archive daemon for recalls.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from backend import config as cfgmod
from backend.config import parse_duration
from backend.errors import ArchiveError
from mountfs.cli.console import UsageError, out


def cmd_serve(a: argparse.Namespace) -> int:
    # imported here: every other reelfs command would pay for the HTTP service at start
    from backend.replication.archive_source import ArchiveSource
    from backend.replication.credentials import Credentials, CredentialsError
    from backend.replication.http_service import serve

    config = cfgmod.load(Path(a.archive))
    host, sep, port = a.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen {a.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    auth = None
    if a.auth:
        try:
            auth = Credentials.load(missing_ok=False).http_users(host, int(port))
        except CredentialsError as e:
            raise ArchiveError(str(e)) from None
        if not auth:
            raise ArchiveError(
                f"--auth: the credentials file has no http://user:password@{host}:{port}/ line"
            )
    source = ArchiveSource(config, a.root)
    try:
        server = serve(
            source,
            a.listen,
            auth=auth,
            recall_wait=parse_duration(a.recall_wait, "--recall-wait"),
            url_prefix=a.url_prefix,
        )
    except OSError as e:
        raise ArchiveError(f"cannot listen on {a.listen}: {e.strerror or e}") from None
    out.print(f"serving archive {config.archive} at {server.url}", soft_wrap=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    source.close()
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("serve", cmd_serve, "serve the archive read-only over HTTP (the baseUrl of posts)")
    sp.add_argument("archive", metavar="ARCHIVE")
    sp.add_argument("--listen", required=True, metavar="HOST:PORT")
    sp.add_argument("--root", default="/", help="serve this archive directory as /")
    sp.add_argument(
        "--url-prefix", default="/", help="the URL path the root appears at (post base_url's path)"
    )
    sp.add_argument(
        "--recall-wait",
        default="20s",
        help="how long a request for a file on tape waits before 503",
    )
    sp.add_argument(
        "--auth",
        action="store_true",
        help="basic auth with the http:// lines of the credentials file",
    )
