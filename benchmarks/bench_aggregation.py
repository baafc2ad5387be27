"""Small-file aggregation: 10,000 files of 64 KiB to tape against one file of 640 MB.

A fresh archive on the emulated library (one drive, cache and tapes on WORK's file system)
is mounted with reelfs's defaults but `mover.flush_delay` of an hour. Each phase takes the
drive out of service (`reelfs drive down`: a family with a batch's worth of files queued is
due at once, and nothing must reach tape before the clock starts), writes its files into
the mount (not timed), makes every queued write urgent in the catalog (what `reelfs
flush` does) and is timed from putting the drive back in service (through the control
socket: no CLI start-up; its tape is in its slot) until no file is dirty any more (the
catalog polled every 20 ms). So each figure covers the library manager's batches, the mount, the pax
writing with checksums, the filemarks and the catalog commits.

    large   one file of FILES x SIZE bytes (the baseline);
    small   FILES files of SIZE bytes, aggregated (reelfs's defaults: batches of
            `mover.batch_files`, one tape file per batch);
    single  `--unaggregated N`: N files of SIZE with `aggregation.threshold = 0` (one tape
            file and one filemark each, the archive remounted for it), for contrast.

The ratio is large seconds per byte / small seconds per byte (1.0: small files go to tape
as fast as one large file); the target is >= 0.8. Not a test: run it by hand.

    python3 benchmarks/bench_aggregation.py [--dir WORK] [--files 10000] [--size 64KiB]
                                            [--unaggregated 2000] [-o SECTION.KEY=VALUE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.admin.control import call  # noqa: E402
from backend.config import parse_size  # noqa: E402
from tests.archive import Mount, init_archive, mount  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

MiB = 1024 * 1024
TIMEOUT = 600.0


def write_files(d: Path, count: int, size: int) -> None:
    d.mkdir(parents=True)
    block = bytearray(os.urandom(size))
    for i in range(count):
        block[:8] = i.to_bytes(8, "little")  # every file different
        with open(d / f"f{i:05d}", "wb") as f:
            f.write(block)


def write_large(p: Path, total: int, chunk: int = 4 * MiB) -> None:
    block = os.urandom(chunk)
    with open(p, "wb") as f:
        left = total
        while left:
            f.write(block[: min(chunk, left)])
            left -= min(chunk, left)


def drive_down(m: Mount) -> None:
    m.cli("drive", "down", "drive0", "--archive", str(m.archive), "--reason", "benchmark")
    wait_for(
        lambda: not [d for d in m.json("drives") if d["volume"]],
        timeout=120,
        what="the tape back in its slot",
    )


def flush_timed(m: Mount) -> float:
    """Make every queued write urgent, put the drive back in service, time until nothing
    is dirty."""
    db = sqlite3.connect(m.archive / "catalog.db", timeout=30)
    try:
        with db:
            db.execute("UPDATE requests SET urgent=1 WHERE kind='write'")
        t0 = time.perf_counter()
        call(m.archive / "run" / "reelfsd.sock", "drive", name="drive0", state="up", reason="")
        while db.execute(
            "SELECT count(*) FROM bitfiles WHERE state='dirty' AND inode IS NOT NULL"
        ).fetchone()[0]:
            if time.perf_counter() - t0 > TIMEOUT:
                raise SystemExit(f"not on tape after {TIMEOUT}s: see {m.archive}/log")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        db.close()


@contextlib.contextmanager
def pyspy(pid: int, out: Path | None) -> Iterator[None]:
    """Record the daemon (raw folded stacks, every thread) while the block runs."""
    if out is None:
        yield
        return
    proc = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--idle",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the clock starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def row(name: str, files: int, nbytes: int, secs: float, base: float | None) -> str:
    """`base`: seconds per byte of the baseline."""
    rate = nbytes / secs / MiB
    ratio = f"{base / (secs / nbytes):.3f}" if base else "-"
    return f"{name:<8} {files:>6} {nbytes / MiB:>9.1f} {secs:>8.2f} {rate:>8.1f} {ratio:>8}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", default="64KiB")
    ap.add_argument("--unaggregated", type=int, default=2000, metavar="N")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--py-spy", type=Path, metavar="FILE", help="record the small phase")
    ap.add_argument("--py-spy-large", type=Path, metavar="FILE", help="record the large phase")
    a = ap.parse_args()
    size = parse_size(a.size, "--size")
    total = size * a.files
    work = Path(tempfile.mkdtemp(prefix="bench-agg-", dir=a.dir))
    archive = init_archive(
        work / "archive",
        drives=1,
        volumes=2,
        volume_size=str(total * 2 + 512 * MiB),
        cache_size=str(total * 3 + 512 * MiB),
        options={"mover.idle_dismount": "1s"},
    )
    mnt = work / "mnt"
    m = mount(archive, mnt, *a.option)
    try:
        drive_down(m)
        write_large(mnt / "large.bin", total)
        with pyspy(m.pid, a.py_spy_large):
            t_large = flush_timed(m)
        drive_down(m)
        write_files(mnt / "small", a.files, size)
        with pyspy(m.pid, a.py_spy):
            t_small = flush_timed(m)
        m.umount()
        t_single = None
        if a.unaggregated:
            m = mount(archive, mnt, "aggregation.threshold=0", *a.option)
            drive_down(m)
            write_files(mnt / "single", a.unaggregated, size)
            t_single = flush_timed(m)
            m.umount()
    finally:
        m.stop()
    print(f"emulated tape in {work}; {a.files} x {a.size} against one file of {total} bytes")
    print(f"{'phase':<8} {'files':>6} {'MiB':>9} {'seconds':>8} {'MiB/s':>8} {'ratio':>8}")
    print(row("large", 1, total, t_large, None))
    print(row("small", a.files, total, t_small, t_large / total))
    if t_single is not None:
        print(row("single", a.unaggregated, a.unaggregated * size, t_single, t_large / total))
    ratio = (t_large / total) / (t_small / total)
    print(
        f"aggregation ratio (small / large throughput): {ratio:.3f} (target >= 0.8): "
        + ("pass" if ratio >= 0.8 else "FAIL")
    )


if __name__ == "__main__":
    main()
