"""Mount time of an archive with a large queue, against the same archive with none.

The queue is read lazily (bounded queries when a mover asks for work), so mounting an
archive with 100,000 files waiting for tape should cost about what mounting an empty one
costs. The files are made directly in the catalog (dirty, each with its cache file and
write request), as after `reelfs umount --no-wait` of a busy archive.

    python3 benchmarks/bench_mount_queue.py [--files 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend import config as cfgmod  # noqa: E402
from backend.cache.store import Cache  # noqa: E402
from backend.catalog import open_catalog  # noqa: E402


def reelfs(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mountfs.cli", *args], check=True, cwd=REPO, capture_output=True
    )


def make_archive(path: Path) -> None:
    reelfs(
        "init",
        str(path),
        "--volumes",
        "4",
        "--volume-size",
        "64MiB",
        "--cache-size",
        "8GiB",
        "-o",
        'mover.flush_delay="1h"',
    )


def fill_queue(path: Path, n: int) -> None:
    cfg = cfgmod.load(path)
    cache = Cache(cfg.cache.path, cfg.cache.size, 0.9, 0.75)
    cat = open_catalog(cfg.catalog_path)
    now = time.time_ns()
    with cat.tx():
        cat.execute(
            "INSERT INTO inodes(id, mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns) "
            "VALUES (2, ?, 0, 0, 0, 2, ?, ?, ?)",
            (stat.S_IFDIR | 0o755, now, now, now),
        )
        cat.execute("INSERT INTO entries(parent, name, inode) VALUES (1, ?, 2)", (b"q",))
        cat.execute("UPDATE inodes SET nlink = 3 WHERE id = 1")
        for i in range(n):
            ino, bid = 10 + i, 1 + i
            bfid = f"{cfg.archive_id}{bid:012d}"
            cat.execute(
                "INSERT INTO inodes(id, mode, uid, gid, size, nlink, atime_ns, mtime_ns, "
                "ctime_ns, bitfile) VALUES (?,?,0,0,0,1,?,?,?,?)",
                (ino, stat.S_IFREG | 0o644, now, now, now, bid),
            )
            cat.execute(
                "INSERT INTO entries(parent, name, inode) VALUES (2, ?, ?)",
                (f"f{i:06d}".encode(), ino),
            )
            cat.execute(
                "INSERT INTO bitfiles(id, bfid, inode, version, size, adler32, crc32c, state, "
                "family, created_ns, modified_ns, accessed_ns) "
                "VALUES (?,?,?,1,0,1,0,'dirty','default',?,?,?)",
                (bid, bfid, ino, now, now, now),
            )
            cat.execute(
                "INSERT INTO requests(kind, bitfile, family, state, created_ns) "
                "VALUES ('write', ?, 'default', 'queued', ?)",
                (bid, now),
            )
            os.close(cache.create(bfid))
    cat.close()


def time_mount(archive: Path, mnt: Path) -> float:
    t0 = time.perf_counter()
    reelfs("mount", str(archive), str(mnt))
    elapsed = time.perf_counter() - t0
    reelfs("umount", str(mnt), "--no-wait")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="reelfs-bench-queue-"))
    try:
        empty, full, mnt = base / "empty", base / "full", base / "mnt"
        mnt.mkdir()
        make_archive(empty)
        make_archive(full)
        t0 = time.perf_counter()
        fill_queue(full, a.files)
        print(f"queued {a.files} files in {time.perf_counter() - t0:.1f}s")
        t_empty = statistics.median(time_mount(empty, mnt) for _ in range(a.runs))
        t_full = statistics.median(time_mount(full, mnt) for _ in range(a.runs))
        print(f"{'archive':<28}{'mount (s)':>10}")
        print(f"{'empty queue':<28}{t_empty:>10.2f}")
        print(f"{a.files:,} files queued{'':<10}"[:28] + f"{t_full:>10.2f}")
        print(f"ratio empty/full: {t_empty / t_full:.2f}x (1.0 = the queue costs nothing)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
