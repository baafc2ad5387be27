"""A mover whose volume sits in another drive (that drive still putting it home): the work
waits for the volume, it is neither sent to another copy nor failed. On a real emulated
library and catalog, the mover driven in the test's thread."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from backend.cache.store import Cache
from backend.catalog import open_catalog
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RECALL, RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.config import load
from backend.library.manager import LibraryManager
from backend.library.work import Work
from backend.mover.session import Mover, MoverContext, MoverHooks
from drivers.emulated import open_library
from drivers.tape import ElementType
from tests.archive import init_archive


def test_a_recall_for_a_volume_in_another_drive_waits_for_it(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "archive", drives=2, volumes=2)
    config = load(archive)
    cat = open_catalog(config.catalog_path)
    lib = open_library(archive / "library")
    try:
        node = Namespace(cat).create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, 0, 0)
        bf = FileClerk(cat, config.archive_id).create(node.id, family="default", size=10)
        with cat.tx():
            cat.execute("UPDATE bitfiles SET state='released' WHERE id=?", (bf.id,))
            cat.execute(
                "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, length, state) "
                "VALUES (?, 'RF0001', 1, 0, 1, 10, 'active')",
                (bf.id,),
            )
        rid, _ = RequestQueue(cat).enqueue_recall(bf.id, "RF0001", 0, 1)
        # RF0001 is in the second drive, as while that drive's mover puts it home
        inv = lib.changer.inventory()
        slot = inv.find("RF0001")
        assert slot is not None
        first, second = sorted(e.address for e in inv.of_type(ElementType.DRIVE))
        lib.changer.move(slot.address, second)
        done: list[tuple[int, str | None]] = []
        ctx = MoverContext(
            name="drive0",
            address=first,
            drive=lib.drives[first],
            changer=lib.changer,
            changer_lock=threading.Lock(),
            lm=LibraryManager(config),
            config=config,
            cache=Cache(config.cache.path, config.cache.size, 0.9, 0.5),
            hooks=MoverHooks(recall_done=lambda b, error: done.append((b, error))),
        )
        mover = Mover(ctx)
        ctx.cat = cat
        (req,) = RequestQueue(cat).recalls_for("RF0001", 2**62, 10)
        mover.execute(Work(RECALL, "RF0001", [req]))
        row = cat.one("SELECT state, volume, error, not_before_ns FROM requests WHERE id=?", (rid,))
        assert row is not None
        state, volume, error, not_before = row
        assert (state, volume) == ("queued", "RF0001")  # still waiting for that volume
        assert "in another drive" in error and not_before > 0  # backed off, with the reason
        assert cat.value("SELECT error FROM bitfiles WHERE id=?", (bf.id,)) is None
        assert cat.value("SELECT state FROM volumes WHERE label='RF0001'") != "missing"
        assert done == []  # nobody waiting in open() was told it failed
        assert ctx.mounted is None and ctx.lm.movers["drive0"].volume is None
    finally:
        lib.close()
        cat.close()
