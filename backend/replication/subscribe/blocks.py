"""Files announced in parts (v03 `blocks`, sr3's `inplace` layout): assembled in one
temp file from parallel streams, each part verified against the manifest.

The first part's message brings the whole manifest, so every part not yet here is fetched
at once; each verified part is recorded durably (a restart resumes with the others), and
parts unchanged since the stored version are copied locally instead. Once complete the
file is stored (and `on_file` runs) once; the other parts' messages find it done (304).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.identity import encode_digest, new_hasher
from backend.replication.message import DIGEST_SIZES, MessageError

from .fetch import FetchError, build_url
from .files import FileReceiver
from .keys import content_key
from .store import ArchiveStore
from .streams import Streams
from .work import Mismatch, Result, Work

log = logging.getLogger("reelfs.subscribe")


class BlockReceiver:
    """Receives files in parts, `parallel` parts side by side (`pool`)."""

    def __init__(
        self,
        state: SubscriptionState,
        store: ArchiveStore,
        streams: Streams,
        files: FileReceiver,
        parallel: int,
    ) -> None:
        self.state = state
        self.store = store
        self.streams = streams
        self.files = files
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="subscribe-part")

    def receive(self, w: Work, origin: dict[str, Any]) -> Result:
        msg, rel, store = w.msg, w.rel, self.store
        blocks = msg["blocks"]
        manifest: dict[int, dict[str, Any]] = blocks["manifest"]
        block_size: int = blocks["size"]
        numbers = sorted(manifest)
        if numbers != list(range(len(numbers))):
            raise MessageError("blocks.manifest: the parts are not numbered 0..n-1")
        for n in numbers[:-1]:
            if manifest[n]["size"] != block_size:
                raise MessageError(f"blocks.manifest[{n}]: a part before the last is short")
        method = (msg.get("identity") or {}).get("method")
        if method not in DIGEST_SIZES:
            raise MessageError("blocks: parts need sha512 or md5 identities")
        total = sum(manifest[n]["size"] for n in numbers)
        key = content_key(msg)
        final = store.local(rel)
        stored = self.state.stored(rel)
        have_stored = stored is not None and store.matches(final, stored.size, stored.mtime_ns)
        if have_stored and stored is not None and stored.key == key:
            return 304, "same parts: already stored here"
        store.ensure_dirs(final.parent, origin)
        mnt = store.mountpoint()

        temp: Path | None = None
        done: set[int] = set()
        inflight = self.state.inflight(rel)
        if inflight is not None:
            old_temp = Path(mnt + inflight.temp)
            if inflight.manifest is not None and old_temp.is_file():
                temp = old_temp
                # parts already verified keep their place if the layout still has them
                done = {n for n in inflight.done if inflight.manifest.get(n) == manifest.get(n)}
                if inflight.key != key:
                    self.state.start_inflight(rel, key, inflight.temp, manifest=manifest, done=done)
            else:
                store.discard(old_temp)
                self.state.end_inflight(rel)
        if temp is None:
            temp = store.new_temp(final)
            self.state.start_inflight(rel, key, store.archive_path(temp), manifest=manifest)
            os.close(store.open_temp(temp, resume=False))
        elif done:
            log.info("%s: resuming, %d of %d parts already here", rel, len(done), len(numbers))
        local: set[int] = set()
        if have_stored and stored is not None and stored.manifest:
            local = {n for n in numbers if stored.manifest.get(n) == manifest[n]}
        todo = [n for n in numbers if n not in done]
        url = build_url(msg["baseUrl"], msg["relPath"], msg.get("retrievePath"))
        fd = store.open_temp(temp, resume=True)
        try:
            if os.fstat(fd).st_size != total:
                os.ftruncate(fd, total)
            futures = [
                self.pool.submit(
                    self._part,
                    rel,
                    fd,
                    url,
                    n,
                    n * block_size,
                    manifest[n],
                    method,
                    final if n in local else None,
                )
                for n in todo
            ]
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
        except BaseException:
            os.close(fd)
            raise
        if errors:
            os.close(fd)
            # a final error (gone, refused) decides; else the first retryable one
            final_errors = [e for e in errors if isinstance(e, FetchError) and not e.retry]
            raise (final_errors or errors)[0]
        store.finish_temp(fd)
        if os.stat(temp).st_size != total:
            self.files.drop_temp(rel, temp)
            raise Mismatch(f"assembled {os.stat(temp).st_size} bytes, {total} announced")
        self.files.place(msg, temp, final, origin)
        st = os.lstat(final)
        w.finish.append(lambda: self.state.end_inflight(rel))
        w.finish.append(
            lambda: self.state.set_stored(rel, key, st.st_size, st.st_mtime_ns, manifest)
        )
        w.stored_file = final
        copied = len([n for n in todo if n in local])
        fetched = len(todo) - copied
        return 201, (
            f"stored: {len(numbers)} parts, {fetched} fetched, {copied} copied locally, "
            f"{len(numbers) - len(todo)} resumed"
        )

    def _part(
        self,
        rel: str,
        fd: int,
        url: str,
        number: int,
        offset: int,
        entry: Mapping[str, Any],
        method: str,
        local: Path | None,
    ) -> None:
        size, expected = int(entry["size"]), entry["identity"]
        if local is not None and self._copy_part(fd, local, offset, size, method, expected):
            self.state.block_done(rel, number)
            return
        hasher = new_hasher(method)
        with self.streams.open(url, offset, size) as body:
            pos = self.streams.write(body, fd, offset, hasher)
        if pos - offset != size:
            raise FetchError(499, f"part {number}: got {pos - offset} of {size} bytes", retry=True)
        if encode_digest(hasher.digest()) != expected:
            raise Mismatch(f"part {number}: {method} differs from the manifest")
        self.state.block_done(rel, number)

    def _copy_part(
        self, fd: int, local: Path, offset: int, size: int, method: str, expected: str
    ) -> bool:
        """Copy an unchanged part from the stored version (verified); False if it is not."""
        hasher = new_hasher(method)
        chunks = []
        try:
            with open(local, "rb") as f:
                f.seek(offset)
                left = size
                while left > 0:
                    data = f.read(min(1 << 20, left))
                    if not data:
                        return False
                    hasher.update(data)
                    chunks.append(data)
                    left -= len(data)
        except OSError:
            return False
        if encode_digest(hasher.digest()) != expected:
            return False
        pos = offset
        for data in chunks:
            os.pwrite(fd, data, pos)
            pos += len(data)
        return True
