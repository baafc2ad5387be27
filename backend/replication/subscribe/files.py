"""Plain files: download (or take the inlined `content`) into a hidden temp file on the
mount, verify, store under the final name, and run `on_file` once stored.

A download resumes a partial temp file after a crash (Range, If-Range on its ETag), is
checked against the announced size and identity (`sha512`/`md5`; `cod` is computed here
and reported as 205; `arbitrary` is accepted), then gets its mode and times and is renamed
into place (`store`). The temp file is recorded in the state DB before it is created, so
none is ever lost, and nothing partial is ever visible under a final name.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.identity import encode_digest, new_hasher
from backend.replication.message import DIGEST_SIZES
from backend.replication.subscribe.config import SubscribeConfig

from .fetch import build_url
from .keys import content_key
from .reports import Reporter
from .store import ArchiveStore
from .streams import Streams
from .work import Mismatch, Result, Work, mode_of, time_of

log = logging.getLogger("reelfs.subscribe")


@dataclass
class FileReceiver:
    """Receives whole files into the archive."""

    cfg: SubscribeConfig
    state: SubscriptionState
    store: ArchiveStore
    streams: Streams
    reporter: Reporter

    def receive(self, w: Work, origin: dict[str, Any]) -> Result:
        msg, rel, store = w.msg, w.rel, self.store
        final = store.local(rel)
        key = content_key(msg)
        size = msg.get("size")
        ident = msg.get("identity") or {}
        method = ident.get("method")
        stored = self.state.stored(rel)
        if (
            stored is not None
            and stored.key == key
            and not key.startswith("weak:")
            and store.matches(final, stored.size, stored.mtime_ns)
        ):
            return 304, "same checksum: already stored here"
        algo = method if method in DIGEST_SIZES else ident.get("value") if method == "cod" else None
        store.ensure_dirs(final.parent, origin)
        mnt = store.mountpoint()

        temp: Path | None = None
        offset, etag = 0, None
        inflight = self.state.inflight(rel)
        if inflight is not None:
            old_temp = Path(mnt + inflight.temp)
            if inflight.key == key and inflight.manifest is None and old_temp.is_file():
                temp, offset, etag = old_temp, old_temp.stat().st_size, inflight.etag
            else:
                store.discard(old_temp)
                self.state.end_inflight(rel)
        hasher = new_hasher(algo) if algo else None
        if temp is not None and offset:
            if hasher is not None:
                with open(temp, "rb") as f:
                    while data := f.read(1 << 20):
                        hasher.update(data)
            log.info("%s: resuming a partial download at byte %d", rel, offset)

        def open_fd(new_etag: str | None) -> int:
            """The temp file to write: the partial one, or a new one recorded first."""
            nonlocal temp
            if temp is not None:
                if new_etag != etag:
                    self.state.set_etag(rel, new_etag)
                return store.open_temp(temp, resume=True)
            temp = store.new_temp(final)
            self.state.start_inflight(rel, key, store.archive_path(temp), etag=new_etag)
            return store.open_temp(temp, resume=False, mode=mode_of(msg))

        if "content" in msg:
            data = inline_data(msg["content"])
            fd = open_fd(None)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except BaseException:
                os.close(fd)
                raise
            pos = len(data)
            hasher = new_hasher(algo) if algo else None
            if hasher is not None:
                hasher.update(data)
        else:
            url = build_url(msg["baseUrl"], msg["relPath"], msg.get("retrievePath"))
            fd, pos, hasher = self._download(url, open_fd, offset, etag, hasher, algo)
        store.finish_temp(fd)
        assert temp is not None

        if size is not None and pos != size:
            self.drop_temp(rel, temp)
            raise Mismatch(f"received {pos} bytes, {size} announced")
        code, text = 201, "stored"
        stored_key = key
        if hasher is not None:
            value = encode_digest(hasher.digest())
            if method in DIGEST_SIZES and value != ident.get("value"):
                self.drop_temp(rel, temp)
                raise Mismatch(f"{method} of the data differs from the announced identity")
            if method == "cod":
                computed = {"method": algo, "value": value}
                w.report_msg = {**msg, "identity": computed}
                stored_key = f"{algo}:{value}"
                code, text = 205, f"stored, {algo} computed on receipt"
        self.place(msg, temp, final, origin)
        mtime_ns = time_of(msg, "mtime")
        if mtime_ns is None:
            mtime_ns = os.lstat(final).st_mtime_ns
        w.finish.append(lambda: self.state.end_inflight(rel))
        w.finish.append(lambda: self.state.set_stored(rel, stored_key, pos, mtime_ns))
        w.stored_file = final
        return code, text

    def _download(
        self,
        url: str,
        open_fd: Callable[[str | None], int],
        offset: int,
        etag: str | None,
        hasher: Any,
        algo: str | None,
    ) -> tuple[int, int, Any]:
        """Fetch `url` from `offset` into the temp file `open_fd` gives once the server
        answered; returns (descriptor, bytes in the file, hasher)."""
        with self.streams.open(url, offset, if_range=etag if offset else None) as body:
            fd = open_fd(body.etag)
            try:
                if body.start != offset:
                    # the whole file again (it changed since, or Range is not supported)
                    os.ftruncate(fd, 0)
                    offset = 0
                    hasher = new_hasher(algo) if algo else None
                pos = self.streams.write(body, fd, offset, hasher)
            except BaseException:
                os.close(fd)
                raise
        return fd, pos, hasher

    def place(
        self, msg: Mapping[str, Any], temp: Path, final: Path, origin: Mapping[str, Any]
    ) -> None:
        """The complete temp file, with the announced mode and times, under its final name."""
        self.store.put(
            temp,
            final,
            origin,
            mode=mode_of(msg),
            mtime_ns=time_of(msg, "mtime"),
            atime_ns=time_of(msg, "atime"),
        )

    def drop_temp(self, rel: str, temp: Path) -> None:
        self.store.discard(temp)
        self.state.end_inflight(rel)

    def on_file(self, final: Path) -> None:
        """Run the `on_file` command on a stored file; a failure is an archive event."""
        cmd = self.cfg.on_file
        if not cmd:
            return
        try:
            proc = subprocess.run(
                [*cmd, str(final)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.cfg.on_file_timeout or None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.reporter.event("subscribe_on_file", f"on_file failed: {exc}", subject=str(final))
            return
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            self.reporter.event(
                "subscribe_on_file",
                f"on_file exited {proc.returncode}: {tail[0][:200]}",
                subject=str(final),
            )


def inline_data(content: Mapping[str, str]) -> bytes:
    """The bytes of an inlined `content` field."""
    value, encoding = content["value"], content["encoding"]
    if encoding == "base64":
        return base64.b64decode(value)
    if encoding == "iso-8859-1":
        return value.encode("iso-8859-1")
    return value.encode("utf-8")
