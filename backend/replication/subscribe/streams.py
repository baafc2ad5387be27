"""The transfers of a subscription: at most `parallel` streams open at once over all files
and parts, each written into its temp file chunk by chunk and abandoned as soon as the
subscriber stops (the temp file and its record stay, so the next start resumes it)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .fetch import Body, Fetcher
from .work import Stopping


class Streams:
    """Opens announced data through `fetcher`, `parallel` streams at the most."""

    def __init__(self, fetcher: Fetcher, parallel: int) -> None:
        self.fetcher = fetcher
        self.slots = threading.BoundedSemaphore(parallel)
        self.stopping = threading.Event()

    def check_stop(self) -> None:
        if self.stopping.is_set():
            raise Stopping()

    @contextmanager
    def open(
        self, url: str, offset: int = 0, length: int | None = None, *, if_range: str | None = None
    ) -> Iterator[Body]:
        """A stream of `url` from `offset`, holding one slot until it is closed."""
        with self.slots:
            self.check_stop()
            body = self.fetcher.open(url, offset, length, if_range=if_range)
            try:
                yield body
            finally:
                body.close()

    def write(self, body: Body, fd: int, pos: int, hasher: Any) -> int:
        """Write what `body` brings into `fd` from `pos`, feeding `hasher` (if any);
        returns the position after the last byte."""
        for chunk in body.chunks():
            os.pwrite(fd, chunk, pos)
            pos += len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            self.check_stop()
        return pos
