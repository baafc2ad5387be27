"""`reelfs flush|recall|release|pin|unpin PATH...` and `reelfs info PATH...`: commands on
files of the archive.

The paths become catalog inodes (mountfs.locate); the command itself is
backend.admin.files, run in the daemon or on the archive (backend.admin.registry).
`--wait` follows the files in the catalog until they are on tape (flush) or in the cache
(recall), with a progress bar that says what holds them up.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from backend.admin import files as admin
from backend.admin import registry
from backend.admin.lock import lock_holder
from backend.catalog.files import FileClerk
from backend.config import Config
from backend.library import diagnosis
from backend.names import printable
from mountfs import locate, views
from mountfs.cli.console import EXIT_FAIL, archive_catalog, err, out


def _run(a: argparse.Namespace, op: str) -> int:
    with archive_catalog(a, a.paths) as (config, cat):
        inodes = [t.inode for t in locate.inodes_for(config, cat, a.paths)]
        # before the daemon is asked: one that dies right after must still be noticed
        daemon = lock_holder(config)
        answer = registry.run(config, op, inodes=inodes)
        queued = answer.pop("queued", None)
        wait = getattr(a, "wait", False)
        if a.json and not wait:
            print(json.dumps(answer))
        elif not a.json:
            views.print_summary(out, op, answer)
        if wait:
            return _wait(a, config, cat, op, inodes, queued, daemon)
        return EXIT_FAIL if answer.get("errors") else 0


def _wait(
    a: argparse.Namespace,
    config: Config,
    cat: Any,
    op: str,
    inodes: list[int],
    queued: list[int] | None,
    daemon: int | None,
) -> int:
    if op == "flush":
        bitfiles = admin.to_write(cat, inodes)
        goal = "archived"
    else:
        bitfiles = queued or []
        goal = "cached"
    files = FileClerk(cat)
    sizes = {b: files.size_of(b) for b in bitfiles}
    total = sum(sizes.values())
    errors: list[str] = []
    left: list[int] = list(bitfiles)  # not there yet, as of the last poll

    def progress() -> tuple[int, bool]:
        done_bytes = 0
        finished = 0
        errors.clear()
        left.clear()
        for b in bitfiles:
            d, _, errs = admin.progress(cat, [b], goal)
            if d:
                finished += 1
                done_bytes += sizes[b]
            else:
                left.append(b)
            errors.extend(errs)
        return (done_bytes if total else finished), finished == len(bitfiles)

    def stalled() -> str | None:
        reason = diagnosis.why_work_waits(cat, config, op, left)
        return str(reason) if reason is not None else views.stall_reason(cat)

    def gone() -> str | None:
        # kill -9 leaves no word behind: the archive lock the daemon held tells
        if daemon is None or lock_holder(config) is not None:
            return None
        todo = "archived" if op == "flush" else "recalled"
        return (
            f"the archive's daemon (pid {daemon}) stopped while {len(left)} file(s) were not "
            f"{todo} yet: mount the archive again to finish (crash recovery requeues them)"
        )

    views.wait_progress(
        progress,
        total=total or len(bitfiles),
        console=err if a.json else out,
        what="writing to tape" if op == "flush" else "recalling from tape",
        timeout=a.timeout,
        stalled=stalled,
        gone=gone,
        quiet=a.json,
    )
    if a.json:
        print(json.dumps({"files": len(bitfiles), "bytes": total, "errors": errors}))
    for e in errors:
        err.print(f"reelfs: {printable(str(e))}")
    return EXIT_FAIL if errors else 0


def cmd_info(a: argparse.Namespace) -> int:
    with archive_catalog(a, a.paths) as (config, cat):
        targets = locate.inodes_for(config, cat, a.paths)
        infos = [views.file_info(cat, config, t.inode, t.path) for t in targets]
    if a.json:
        print(json.dumps(infos if len(infos) != 1 else infos[0], default=str))
    else:
        for i in infos:
            views.print_info(out, i)
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    for name, help in (
        ("flush", "write files below PATHs to tape now"),
        ("recall", "bring released files below PATHs back into the cache, in tape order"),
        ("release", "drop cached copies of archived files (tape only afterwards)"),
        ("pin", "keep files in the cache"),
        ("unpin", "let files leave the cache again"),
    ):
        sp = add(name, lambda a, op=name: _run(a, op), help)
        sp.add_argument("paths", nargs="+", metavar="PATH")
        if name in ("flush", "recall"):
            sp.add_argument("--wait", action="store_true", help="show progress until done")
            sp.add_argument("--timeout", type=float, default=None)

    sp = add("info", cmd_info, "what the archive knows of files")
    sp.add_argument("paths", nargs="+", metavar="PATH")
