"""Throughput of the emulated tape drive against plain file I/O on the same disk.

Writes SIZE bytes in RECORD-byte records through `TapeDrive.write_block` followed by
`write_filemarks(1)` (the drive's sync point), and compares with
`dd if=/dev/zero of=FILE bs=RECORD count=N conv=fsync` run in the same directory; then reads
the tape back with `read_block` and compares with `dd if=FILE of=/dev/null bs=RECORD` (the
drive's `load()`, which reads the index, is timed apart). Both reads start from a cold page
cache for their file (`posix_fadvise(DONTNEED)` on that file only, so other users of the
machine are not disturbed). The disk is synced before each timed write so that neither
inherits the other's write-back. After an untimed warm-up round, each measurement is
repeated in ABBA order; the best runs and the median of the paired ratios are printed
(emulated / baseline throughput; 1.0 is as fast as the plain file). On a shared virtual
machine single runs vary by a factor of two; read the best-of and median figures together.
Not a test: run it by hand.

    python3 benchmarks/bench_emulated_tape.py [--dir DIR] [--size-mib 1024] [--record-kib 256]
                                              [--repeat 4] [--warmup 1]

Figures (1 GiB, 256 KiB records, ext4 on a virtio disk of a 2-core VM shared with other
test runs; two runs of this script, best-of / median of paired runs):

    write ratio  0.919 / 0.943    and  0.999 / 1.045   (CPU: 0.31 s vs 0.31 s, 0.32 vs 0.32)
    read ratio   0.843 / 1.140    and  1.321 / 1.070   (CPU: 0.19 s vs 0.15 s, 0.16 vs 0.16)
    load()       4 ms (index of 4096 records)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from drivers.emulated import create_library, open_library


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def quiesce() -> None:
    """Start each timed write from a disk with no write-back (or discard) pending."""
    os.sync()


class Timer:
    """Wall-clock time, and the CPU time spent by this process and its children."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        cpu = os.times()
        self.wall = time.perf_counter() - self._wall
        self.cpu = sum(cpu[:4]) - sum(self._cpu[:4])  # user, system, children's user, system


def dd_write(path: Path, record: int, count: int) -> Timer:
    path.unlink(missing_ok=True)
    quiesce()
    with Timer() as t:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={path}", f"bs={record}", f"count={count}", "conv=fsync"],
            check=True,
            capture_output=True,
        )
    return t


def dd_read(path: Path, record: int) -> Timer:
    drop_cache(path)
    with Timer() as t:
        subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", f"bs={record}"], check=True, capture_output=True
        )
    return t


def tape_write(libdir: Path, record: int, count: int) -> Timer:
    if libdir.exists():
        shutil.rmtree(libdir)
    create_library(
        libdir, drives=1, slots=1, volumes=["BENCH1"], capacity=2 * record * count + (1 << 20)
    )
    library = open_library(libdir)
    (address,) = library.drives
    library.changer.move(1024, address)
    drive = library.drives[address]
    drive.load()
    data = bytes(record)
    quiesce()
    with Timer() as t:
        for _ in range(count):
            drive.write_block(data)
        drive.write_filemarks(1)
    drive.unload()
    library.close()
    return t


def tape_read(libdir: Path, record: int, count: int) -> tuple[Timer, Timer]:
    """Timers of `load()` (which reads the index, like threading a tape) and of the reads."""
    for path in (libdir / "tapes").iterdir():
        drop_cache(path)
    library = open_library(libdir)
    (address,) = library.drives
    drive = library.drives[address]
    with Timer() as load:
        drive.load()
    with Timer() as read:
        for _ in range(count):
            drive.read_block(record)
    drive.unload()
    library.close()
    return load, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to write (same disk)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--record-kib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=4, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    args = parser.parse_args()
    record = args.record_kib * 1024
    count = args.size_mib * 1024 * 1024 // record
    size = record * count
    work = Path(tempfile.mkdtemp(prefix="bench-emulated-", dir=args.dir))
    try:
        plain, libdir = work / "plain.img", work / "library"
        runs: dict[str, list[Timer]] = {
            name: [] for name in ("dd write", "tape write", "dd read", "tape read", "tape load")
        }

        def dd_pair() -> None:
            runs["dd write"].append(dd_write(plain, record, count))
            runs["dd read"].append(dd_read(plain, record))

        def tape_pair() -> None:
            runs["tape write"].append(tape_write(libdir, record, count))
            load, read = tape_read(libdir, record, count)
            runs["tape load"].append(load)
            runs["tape read"].append(read)

        for _ in range(args.warmup):
            dd_pair()
            tape_pair()
        for timers in runs.values():
            timers.clear()
        for i in range(args.repeat):
            # ABBA order, so that whoever runs first in a round (and pays for memory the
            # page cache has just given back) is not always the same.
            for pair in (dd_pair, tape_pair) if i % 2 == 0 else (tape_pair, dd_pair):
                pair()
        mib = size / (1 << 20)
        print(f"{mib:.0f} MiB in {count} records of {record} bytes, in {work.parent}")
        print(f"  {'':<11} {'best wall':>10} {'throughput':>13} {'CPU':>7}   wall of each run")
        for name, timers in runs.items():
            best = min(timers, key=lambda t: t.wall)
            rate = "" if name == "tape load" else f"{mib / best.wall:8.1f} MiB/s"
            listed = " ".join(f"{t.wall:.3f}" for t in timers)
            print(f"  {name:<11} {best.wall:8.3f} s {rate:>13} {best.cpu:5.2f} s   {listed}")
        for what in ("write", "read"):
            dd, tape = runs[f"dd {what}"], runs[f"tape {what}"]
            best = min(t.wall for t in dd) / min(t.wall for t in tape)
            paired = statistics.median(d.wall / t.wall for d, t in zip(dd, tape, strict=True))
            target = "  (target >= 0.9)" if what == "write" else ""
            print(
                f"{what} ratio (tape/dd throughput): best-of {best:.3f},"
                f" median of paired runs {paired:.3f}{target}"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
