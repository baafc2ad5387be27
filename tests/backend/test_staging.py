"""The start of a modification session against a mover archiving the same file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backend.cache.staging import Staging
from backend.cache.store import Cache
from backend.catalog import open_catalog
from backend.catalog.files import ARCHIVED, DIRTY
from backend.catalog.namespace import Namespace
from backend.catalog.schema import ROOT_INODE

ARCHIVE_ID = "0123ABCD"


def test_a_file_archived_while_its_session_starts_gets_a_new_version(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path / "catalog.db", create=True)
    try:
        cache = Cache(tmp_path / "cache", 10_000_000, 0.9, 0.75)
        st = Staging(cat, cache, ARCHIVE_ID, max_file_size=1_000_000)
        node = Namespace(cat).create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, 0, 0)
        h = st.create(node, os.O_WRONLY)
        first = h.oi.bitfile
        cat.execute(
            "INSERT INTO volumes(label, capacity, state, inserted_ns) VALUES ('V1', 1, 'full', 1)"
        )
        stale = st.files.get(first)
        assert stale is not None and stale.state == DIRTY
        # what a mover commits between the session's read of the file and its update
        cat.execute("UPDATE bitfiles SET state=? WHERE id=?", (ARCHIVED, first))
        cat.execute(
            "INSERT INTO tape_copies(bitfile, volume, fileno, block, length, state) "
            "VALUES (?, 'V1', 0, 0, 0, 'active')",
            (first,),
        )
        reads = iter([stale])
        real_get = st.files.get
        st.files.get = lambda bid: next(reads, None) or real_get(bid)  # type: ignore[method-assign]
        st.write(h.fh, 0, b"data")
        assert h.oi.bitfile != first  # tape is write-once: a new version took the data
        assert cat.value("SELECT generation FROM bitfiles WHERE id=?", (first,)) == 0
        # the archived version is left as it was on tape, superseded (its copy awaits repack)
        assert cat.value("SELECT state FROM bitfiles WHERE id=?", (first,)) == "deleted"
        assert cat.value("SELECT writers FROM bitfiles WHERE id=?", (h.oi.bitfile,)) == 1
    finally:
        cat.close()
