"""The reelfs mount against the disk its cache lives on: data and metadata, in one run.

A fresh archive is created under WORK (cache on WORK's file system, `mover.flush_delay`
of an hour so the mover stays away) and mounted on WORK/mnt; the disk side is WORK/disk,
checked to be the same file system as the cache. Each operation runs on the disk, then on
the mount; the ratio is disk seconds / mount seconds (the mount's throughput as a fraction
of the disk's: 1.0 is as fast).

    write       SIZE bytes in 1 MiB `write`s of one random buffer, then fsync (both sides
                start from `sync`, so that neither inherits the other's write-back)
    read cold   the file just written, after `sync; echo 3 > drop_caches` and
                POSIX_FADV_DONTNEED on the file (for the mount: the FUSE file's own pages),
                checked with fincore; 1 MiB `readinto`s
    cp          `cp` of a SIZE file from WORK/disk (in the page cache) into the mount /
                into WORK/disk; no sync
    create      FILES empty files in one directory: open(O_CREAT|O_EXCL) + close each
    stat cold   lstat of each, after drop_caches (the mount must answer LOOKUPs)
    stat warm   lstat of each again (the kernel's entry and attribute caches)
    ls -l cold  `ls -l DIR > /dev/null` after drop_caches (READDIRPLUS, then the two
                getxattr per file that ls makes: security.selinux, system.posix_acl_access)
    ls -l warm  the same again
    unlink      unlink of each (after ls -l: names known to the kernel)

Targets: write >= 0.9, read cold >= 0.6; create, stat, ls -l and unlink above the plain
pyfuse3 passthrough example's ratio (the anchors below; `--passthrough PATH` to pyfuse3's
examples/passthroughfs.py also measures it in this run, shown beside them) and stat,
ls -l >= 0.3.

The daemon's CPU seconds for each mount operation are printed too; `--py-spy DIR` records
the daemon during each mount operation (raw folded stacks, see `pyspy_summary.py`).
Not a test: run it by hand (as root: it drops the page cache of the machine).

`--fuse-readahead-kb 1024` raises the mount's readahead (128 KiB by default for FUSE)
before measuring; `--batch-files 1000` gives the archive reelfs's default mover batch,
with which the mover starts writing the small files to tape in the middle of the run.

    python3 benchmarks/bench_mount.py [--dir WORK] [--size 1GiB] [--files 10000]
        [--passthrough PATH/passthroughfs.py] [--py-spy DIR] [--only data|meta]
        [--fuse-readahead-kb KB] [--batch-files N] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness
from harness import MiB, Timer, drop_caches, drop_file, ratio_row, resident_bytes

#: ratios of the plain pyfuse3 passthrough example on this kind of machine (2 cores, virtio)
PASSTHROUGH_ANCHORS = {"create": 0.12, "stat": 0.009, "ls -l": 0.018, "unlink": 0.026}
FLOOR = {"stat": 0.3, "ls -l": 0.3}  # stat and ls -l must also reach this much of the disk


# -- data -----------------------------------------------------------------------------------


def write_file(path: Path, size: int, buf: bytes) -> float:
    path.unlink(missing_ok=True)
    os.sync()
    with Timer() as t:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = size
            while left:
                n = os.write(fd, buf[: min(len(buf), left)])
                left -= n
            os.fsync(fd)
        finally:
            os.close(fd)
    return t.wall


def read_cold(path: Path, size: int) -> tuple[float, int | None]:
    drop_caches()
    drop_file(path)
    resident = resident_bytes(path)
    buf = bytearray(MiB)
    got = 0
    with Timer() as t, open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            got += n
    if got != size:
        raise SystemExit(f"read {got} bytes of {path}, expected {size}")
    return t.wall, resident


def cp(src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # source warm
    os.sync()
    with Timer() as t:
        subprocess.run(["cp", str(src), str(dst)], check=True)
    return t.wall


# -- metadata -------------------------------------------------------------------------------


def names(d: Path, n: int) -> list[str]:
    return [os.path.join(d, f"f{i:06d}") for i in range(n)]


def create_all(paths: list[str]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for p in paths:
        os.close(os.open(p, flags, 0o644))


def stat_all(paths: list[str]) -> None:
    for p in paths:
        os.lstat(p)


def unlink_all(paths: list[str]) -> None:
    for p in paths:
        os.unlink(p)


def ls_l(d: Path) -> None:
    subprocess.run(["ls", "-l", str(d)], stdout=subprocess.DEVNULL, check=True)


META_OPS = ("create", "stat cold", "stat warm", "ls -l cold", "ls -l warm", "unlink")


def metadata(d: Path, n: int, timed: Callable[[str, Callable[[], None]], float]) -> dict:
    """The metadata sequence on one side; `timed(op, fn)` runs and times one operation."""
    d.mkdir()
    paths = names(d, n)
    out = {}
    out["create"] = timed("create", lambda: create_all(paths))
    drop_caches()
    out["stat cold"] = timed("stat cold", lambda: stat_all(paths))
    out["stat warm"] = timed("stat warm", lambda: stat_all(paths))
    drop_caches()
    out["ls -l cold"] = timed("ls -l cold", lambda: ls_l(d))
    out["ls -l warm"] = timed("ls -l warm", lambda: ls_l(d))
    out["unlink"] = timed("unlink", lambda: unlink_all(paths))
    d.rmdir()
    return out


def plain_timed(op: str, fn: Callable[[], None]) -> float:
    with Timer() as t:
        fn()
    return t.wall


# -- the passthrough example, measured in the same run ---------------------------------------


def passthrough_metadata(script: Path, work: Path, n: int) -> dict:
    src, mnt = work / "pt-src", work / "pt-mnt"
    src.mkdir()
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(src), str(mnt)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{script} did not mount on {mnt}")
            time.sleep(0.05)
        return metadata(mnt / "many", n, plain_timed)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where to make the work directory (the disk under test)",
    )
    parser.add_argument(
        "--size",
        type=harness.size_arg,
        default=1024 * MiB,
        help="bytes of the big files: 1GiB, 64MiB; a plain number is MiB",
    )
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--passthrough",
        type=Path,
        default=None,
        help="pyfuse3's examples/passthroughfs.py: measure its ratios too",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        dest="pyspy",
        help="record the daemon during each mount operation into this folder",
    )
    parser.add_argument("--only", choices=["data", "meta"], default=None)
    parser.add_argument(
        "--batch-files",
        type=int,
        default=10**9,
        help="the archive's mover.batch_files (1000, the default of reelfs, "
        "lets the mover start writing the small files during the run)",
    )
    parser.add_argument(
        "--fuse-readahead-kb",
        type=int,
        default=None,
        help="set the mount's readahead (/sys/class/bdi/.../read_ahead_kb) before measuring",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the cold reads drop the page cache")
    size = args.size
    work = Path(tempfile.mkdtemp(prefix="bench-mount-", dir=args.dir))
    disk = work / "disk"
    disk.mkdir()
    arch = harness.fresh_archive(
        work, file_size=size, cache_size=4 * size + 1024 * MiB, batch_files=args.batch_files
    )
    rows: list[list[str]] = []
    cpu: dict[str, float] = {}
    spans: dict[str, tuple[int, int]] = {}
    notes: list[str] = []

    def on_mount(op: str, fn: Callable[[], float]) -> float:
        """Run one mount-side operation, counting the daemon's CPU (and recording it)."""
        out = args.pyspy / f"{op.replace(' ', '_')}.txt" if args.pyspy else None
        with harness.pyspy(arch.pid, out):
            c0, t0 = harness.cpu_seconds(arch.pid), time.time_ns()
            secs = fn()
            cpu[op] = harness.cpu_seconds(arch.pid) - c0
            spans[op] = (t0, time.time_ns())
        return secs

    try:
        if not harness.same_filesystem(disk, arch.cache_dir):
            raise SystemExit(f"{disk} and {arch.cache_dir} are not on the same file system")
        if args.fuse_readahead_kb is not None:
            harness.set_fuse_readahead_kb(arch.mnt, args.fuse_readahead_kb)
        print(
            f"work directory {work}; archive daemon pid {arch.pid}; "
            f"FUSE readahead {harness.fuse_readahead_kb(arch.mnt)} KiB"
        )
        if args.only != "meta":
            buf = os.urandom(MiB)
            d = write_file(disk / "big", size, buf)
            m = on_mount("write", lambda: write_file(arch.mnt / "big", size, buf))
            rows.append(ratio_row("write", d, m, 0.9))
            d, res_d = read_cold(disk / "big", size)
            resident: dict[str, int | None] = {}

            def mount_read() -> float:
                secs, resident["mount"] = read_cold(arch.mnt / "big", size)
                return secs

            m = on_mount("read cold", mount_read)
            res_m = resident["mount"]
            rows.append(
                ratio_row(
                    "read cold", d, m, 0.6, f"resident before: disk {res_d}, mount {res_m} bytes"
                )
            )
            d = cp(disk / "big", disk / "copy")
            m = on_mount("cp", lambda: cp(disk / "big", arch.mnt / "copy"))
            rows.append(ratio_row("cp", d, m, None))
            for p in (disk / "copy", arch.mnt / "copy", arch.mnt / "big"):
                p.unlink()
        if args.only != "data":
            n = args.files
            disk_meta = metadata(disk / "many", n, plain_timed)
            mount_meta = metadata(
                arch.mnt / "many", n, lambda op, fn: on_mount(op, lambda: plain_timed(op, fn))
            )
            pt = passthrough_metadata(args.passthrough, work, n) if args.passthrough else None
            for op in META_OPS:
                base = op.replace(" cold", "").replace(" warm", "")
                anchor = PASSTHROUGH_ANCHORS[base]
                target = max(anchor, FLOOR.get(base, 0.0))
                note = f"passthrough anchor {anchor:g}"
                if pt:
                    note += f", this run {disk_meta[op] / pt[op]:.3f} ({pt[op]:.3f} s)"
                rows.append(ratio_row(f"{op} ({n})", disk_meta[op], mount_meta[op], target, note))
        busy = {op: arch.tape_mounts(*span) for op, span in spans.items()}
        busy = {op: n for op, n in busy.items() if n}
        total = arch.tape_mounts(0, time.time_ns())
        notes.append(
            f"the mover mounted a tape {total} time(s) during the run"
            + (f", during: {busy}" if busy else "")
        )
        queued = arch.query("SELECT COUNT(*) FROM requests WHERE kind='write'")[0][0]
        notes.append(f"write requests queued at the end: {queued}")
    finally:
        arch.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{size / MiB:.0f} MiB files, {args.files} small files; ratio = disk s / mount s")
    header = ["operation", "disk s", "mount s", "ratio", "target", "result", "note"]
    for r in rows:
        key = r[0].split(" (")[0]
        r[-1] = (r[-1] + "; " if r[-1] else "") + f"daemon CPU {cpu.get(key, 0):.2f} s"
    harness.print_table(header, rows)
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
