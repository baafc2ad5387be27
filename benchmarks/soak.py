"""Soak: the daemon's memory and descriptors stay flat under a steady mixed load.

A fresh archive (emulated library, two drives, `mover.flush_delay` 3 s so that the movers
write all the time) is mounted, and for M minutes:

    8 writers   processes, each creating and rewriting its own 150 files (1 KiB-128 KiB,
                written, fsynced, closed), so the namespace stays bounded and every
                rewrite is a new version for the movers to write
    2 readers   processes, each with 20 files of its own written and flushed at the start,
                then in a loop: `reelfs release` one, read it back (a recall from tape),
                compare its sha256 with what was written
    status      `reelfs status` in a loop in this process (its failures are counted)

Every 5 s the daemon's RSS (VmRSS in /proc/PID/status), its open descriptors
(/proc/PID/fd) and threads are sampled. Printed: start, end, max, and the least-squares
slope over the last third of the run.

Unbounded growth, the verdict: a figure fails when, over the last third of the run, its
slope is above the limit (RSS 1 MiB/min, fds 1/min, threads 0.5/min) AND its maximum in
that third is above the maximum of the first third by more than the margin (RSS 10 %,
fds 16, threads 4). The two together: a warm-up that levels off (caches filling, the
SQLite page cache, pools of worker threads) passes; a steady climb late in the run fails
even if small. A sha256 mismatch, a writer or reader error, or no recall at all also fail.

    python3 benchmarks/soak.py --minutes 10 [--dir WORK]

Exits 1 on failure. Not a test: run it by hand, as root.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import harness  # puts the repository on sys.path

from tests.archive import file_of, init_archive, mount, reelfs

SAMPLE_EVERY = 5.0  # s
WRITERS, READERS = 8, 2
FILES_PER_WRITER, FILES_PER_READER = 150, 20
LIMITS = {  # name: (slope per minute, margin over the first third, margin is relative)
    "rss_mib": (1.0, 0.10, True),
    "fds": (1.0, 16, False),
    "threads": (0.5, 4, False),
}


def writer(mnt: str, n: int, stop: mp.Event, out: mp.Queue) -> None:
    """Create and rewrite this writer's files until told to stop."""
    rng = random.Random(n)
    d = Path(mnt) / f"w{n}"
    d.mkdir(exist_ok=True)
    count, errors = 0, []
    while not stop.is_set():
        path = d / f"f{rng.randrange(FILES_PER_WRITER):03d}.dat"
        data = file_of(rng.randint(1024, 128 * 1024), rng.randrange(1 << 30))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            count += 1
        except OSError as e:
            errors.append(f"{path}: {e}")
            if len(errors) > 10:
                break
    out.put(("writer", n, count, errors))


def reader(mnt: str, n: int, stop: mp.Event, out: mp.Queue) -> None:
    """Release one of this reader's files and read it back from tape, in a loop."""
    d = Path(mnt) / f"r{n}"
    want = {
        d / f"f{i:02d}.dat": hashlib.sha256(file_of(200_000, 1000 * n + i)).hexdigest()
        for i in range(FILES_PER_READER)
    }
    rng = random.Random(n)
    count, errors = 0, []
    while not stop.is_set():
        path = rng.choice(sorted(want))
        p = reelfs("release", str(path), check=False, timeout=120)
        if p.returncode != 0:
            errors.append(f"release {path}: {p.stderr.decode().strip()}")
        else:
            try:
                got = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as e:
                errors.append(f"read {path}: {e}")
            else:
                if got != want[path]:
                    errors.append(f"{path}: sha256 {got[:12]} != written {want[path][:12]}")
                count += 1
        if len(errors) > 10:
            break
    out.put(("reader", n, count, errors))


def sample(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
    }


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var


@dataclass
class Verdict:
    """One figure's summary and whether it looks unbounded."""

    name: str
    start: float
    end: float
    peak: float
    slope: float
    grew: float
    failed: bool


def judge(name: str, series: list[tuple[float, float]]) -> Verdict:
    limit, margin, relative = LIMITS[name]
    third = max(1, len(series) // 3)
    first, last = series[:third], series[-third:]
    first_max = max(v for _, v in first)
    last_max = max(v for _, v in last)
    slope = slope_per_minute(last)
    allowed = first_max * margin if relative else margin
    grew = last_max - first_max
    values = [v for _, v in series]
    return Verdict(
        name, values[0], values[-1], max(values), slope, grew, slope > limit and grew > allowed
    )


def status_loop(archive: Path, stop: threading.Event, stats: dict) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            p = reelfs("status", "--archive", str(archive), check=False, timeout=60)
            ok = p.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        stats["runs"] += 1
        stats["failures"] += not ok
        stats["max_s"] = max(stats["max_s"], time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/soak-bench"))
    a = ap.parse_args()
    work = a.dir.absolute()
    if os.path.ismount(work / "mnt"):
        print(f"soak: {work / 'mnt'} is mounted; unmount it first", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=harness.REPO
    ).stdout.strip()
    archive = init_archive(
        work / "archive",
        drives=2,
        volumes=8,
        volume_size="1GiB",
        cache_size="1GiB",
        options={"mover.flush_delay": "3s", "mover.idle_dismount": "5s"},
    )
    m = mount(archive, work / "mnt")
    failed: list[str] = []
    try:
        for n in range(READERS):
            d = m.mnt / f"r{n}"
            d.mkdir()
            for i in range(FILES_PER_READER):
                (d / f"f{i:02d}.dat").write_bytes(file_of(200_000, 1000 * n + i))
        m.flush(timeout=300)
        print(f"soak: {a.minutes:g} min, commit {commit}, daemon pid {m.pid}, work {work}")
        ctx = mp.get_context("fork")  # before any thread of ours exists
        stop, out = ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=writer, args=(str(m.mnt), n, stop, out)) for n in range(WRITERS)
        ]
        procs += [
            ctx.Process(target=reader, args=(str(m.mnt), n, stop, out)) for n in range(READERS)
        ]
        for p in procs:
            p.start()
        st_stop = threading.Event()
        st_stats = {"runs": 0, "failures": 0, "max_s": 0.0}
        st = threading.Thread(target=status_loop, args=(archive, st_stop, st_stats))
        st.start()
        t0 = time.monotonic()
        series: dict[str, list[tuple[float, float]]] = {k: [] for k in LIMITS}
        next_print = 0.0
        while (elapsed := time.monotonic() - t0) < a.minutes * 60:
            s = sample(m.pid)
            for k, v in s.items():
                series[k].append((elapsed, v))
            if elapsed >= next_print:
                print(
                    f"  {elapsed:5.0f}s rss {s['rss_mib']:6.1f} MiB fds {s['fds']:4.0f} "
                    f"threads {s['threads']:3.0f}",
                    flush=True,
                )
                next_print += 60
            if not all(p.is_alive() for p in procs):
                failed.append("a writer or reader ended early")
                break
            time.sleep(SAMPLE_EVERY)  # the sampling period, not a synchronisation
        stop.set()
        st_stop.set()
        results = []
        deadline = time.monotonic() + 180
        while len(results) < len(procs) and time.monotonic() < deadline:
            try:
                results.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
            except Exception:
                break
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                failed.append(f"process {p.pid} still running 180s after the stop")
                p.kill()
        st.join(120)
        writes = sum(c for kind, _n, c, _e in results if kind == "writer")
        recalls = sum(c for kind, _n, c, _e in results if kind == "reader")
        for kind, n, _c, errors in results:
            for e in errors[:3]:
                failed.append(f"{kind} {n}: {e}")
        if len(results) < len(procs):
            failed.append(f"only {len(results)} of {len(procs)} workers reported")
        if recalls == 0:
            failed.append("no recall completed")
        if st_stats["failures"]:
            failed.append(f"reelfs status failed {st_stats['failures']} times")
        print(
            f"load: {writes} files written+fsynced, {recalls} release+recall+sha256 read-backs, "
            f"{st_stats['runs']} status runs (max {st_stats['max_s']:.1f}s), "
            f"{len(series['fds'])} samples"
        )
        print(f"{'':10}{'start':>9}{'end':>9}{'max':>9}{'slope/min':>11}{'growth':>9}  verdict")
        for k in LIMITS:
            v = judge(k, series[k])
            verdict = "UNBOUNDED?" if v.failed else "flat"
            print(
                f"{k:10}{v.start:9.1f}{v.end:9.1f}{v.peak:9.1f}{v.slope:11.2f}{v.grew:9.1f}  "
                f"{verdict}"
            )
            if v.failed:
                failed.append(f"{k} grows: {v.slope:.2f}/min over the last third")
        check = reelfs("check", "--archive", str(archive), check=False, timeout=120)
        if check.returncode != 0:
            failed.append(f"reelfs check: {check.stderr.decode().strip()}")
        print(f"reelfs check: {'ok' if check.returncode == 0 else 'FAIL'}")
    finally:
        m.stop()
    for f in failed:
        print(f"FAIL {f}")
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
