"""What the archive-core benchmarks share: timers, dropping caches, a fresh mounted archive,
the daemon's CPU time, optional py-spy recording, and the result table.

Imported by `bench_mount.py` and `bench_mover.py` (run as scripts from any directory: this
module puts the repository on `sys.path` so that `backend`, `drivers` and `tests` import).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.config import parse_size  # noqa: E402
from tests.archive import Mount, init_archive, mount  # noqa: E402

MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def size_arg(text: str) -> int:
    """`--size 1GiB`, `--size 64MiB`; a plain number is MiB (`--size 1024`)."""
    return int(text) * MiB if text.isdigit() else parse_size(text, "--size")


class Timer:
    """Wall-clock seconds of a block."""

    wall: float

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0


def drop_caches() -> None:
    """Empty the page cache, dentries and inodes of the whole machine (we are root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def drop_file(path: Path) -> None:
    """Drop one file's clean pages (works on FUSE files too: the kernel's own copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_bytes(path: Path) -> int | None:
    """Bytes of `path` in the page cache (util-linux fincore), None if it cannot tell."""
    if shutil.which("fincore") is None:
        return None
    p = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
    )
    try:
        return int(p.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _bdi(mnt: Path) -> Path:
    st = os.stat(mnt)
    return Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")


def fuse_readahead_kb(mnt: Path) -> int | None:
    """The kernel's readahead for the mount (FUSE caps it at 128 KiB unless raised)."""
    try:
        return int(_bdi(mnt).read_text())
    except (OSError, ValueError):
        return None


def set_fuse_readahead_kb(mnt: Path, kb: int) -> None:
    _bdi(mnt).write_text(f"{kb}\n")


@contextlib.contextmanager
def pyspy(pid: int, out: Path | None, rate: int = 250) -> Iterator[None]:
    """Record the daemon with py-spy (raw folded stacks, all threads) while the block runs;
    nothing when `out` is None. --nonblocking: sampling must not stop the daemon."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
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
    time.sleep(1.0)  # let it attach before the timed work starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Archive:
    path: Path
    mnt: Path
    m: Mount
    guard: sqlite3.Connection | None = None

    @property
    def pid(self) -> int:
        return self.m.pid

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def open_guard(self) -> None:
        """One connection to the catalog, kept open until the daemon has stopped.

        The daemon's `Catalog.sync()` (run on every fsync on the mount) opens and closes
        catalog.db and its -wal with os.open/os.close, which drops the daemon's POSIX
        locks on them; the next process that closes a connection then believes it is the
        last, checkpoints, and deletes the -wal and -shm the daemon is still writing to:
        from then on nothing the daemon commits is seen by other processes (`flush
        --wait` never returns). A connection held open here keeps its own lock, so that
        no other process's close deletes them; every query of the benchmark uses it.
        """
        self.guard = sqlite3.connect(
            f"file:{self.path / 'catalog.db'}?mode=ro",
            uri=True,
            timeout=30,
            isolation_level=None,
            check_same_thread=False,
        )
        self.guard.execute("SELECT COUNT(*) FROM meta").fetchall()

    def stop(self) -> None:
        self.m.stop()
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the catalog beside the running daemon (autocommit: the latest commits)."""
        if self.guard is None:
            con = sqlite3.connect(f"file:{self.path / 'catalog.db'}?mode=ro", uri=True)
            try:
                return con.execute(sql, params).fetchall()
            finally:
                con.close()
        return self.guard.execute(sql, params).fetchall()

    def tape_mounts(self, start_ns: int, end_ns: int) -> int:
        """Tapes the movers mounted between two times (`mount` events)."""
        rows = self.query(
            "SELECT COUNT(*) FROM events WHERE kind='mount' AND time_ns BETWEEN ? AND ?",
            (start_ns, end_ns),
        )
        return int(rows[0][0])


def fresh_archive(
    work: Path,
    *,
    file_size: int,
    cache_size: int,
    drives: int = 1,
    volumes: int = 1,
    batch_files: int = 10**9,
    options: dict | None = None,
) -> Archive:
    """A new archive under `work` mounted on `work/mnt`, with nothing going to tape unless
    flushed: `mover.flush_delay` of an hour, and `mover.batch_files` so large that no
    number of new files makes a full batch (the default, 1000, starts the mover in the
    middle of a metadata benchmark). Volumes hold at least two files of `file_size` (the
    mount refuses files bigger than the largest volume)."""
    path, mnt = work / "archive", work / "mnt"
    volume_size = 2 * file_size + 256 * MiB
    init_archive(
        path,
        drives=drives,
        volumes=volumes,
        volume_size=str(volume_size),
        cache_size=str(cache_size),
        options={"mover.flush_delay": "1h", "mover.batch_files": batch_files, **(options or {})},
    )
    m = mount(path, mnt)
    arch = Archive(path, mnt, m)
    arch.open_guard()
    return arch


def ratio_row(
    name: str, disk: float, mnt: float, target: float | None, note: str = ""
) -> list[str]:
    """One table row: the mount's throughput as a fraction of the disk's (disk s / mount s)."""
    ratio = disk / mnt if mnt > 0 else float("inf")
    if target is None:
        verdict, tgt = "-", "-"
    else:
        verdict, tgt = ("pass" if ratio >= target else "FAIL"), f">= {target:.3g}"
    return [name, f"{disk:.3f}", f"{mnt:.3f}", f"{ratio:.3f}", tgt, verdict, note]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = len(widths) - 1
    line = "  ".join(f"{{:<{w}}}" if i in (0, last) else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))
