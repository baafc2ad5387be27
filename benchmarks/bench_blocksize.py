"""The mover's throughput by tape block size, 64 KiB to 1 MiB.

For each block size, a fresh archive (`reelfs init --block-size BS`, one drive) is mounted
with writes held back, a file of SIZE written into it, and:

    write   every queued write made urgent in the catalog and the daemon woken, timed
            until the file is archived (mount, pax with checksums, filemark, commit);
    read    the file released and recalled through the control socket (what `reelfs
            recall` does), timed until it is cached again (mount, locate, read with
            checksums, verify, publish); the tape image is dropped from the page cache
            first on the emulated library.

Both start with the tape in its slot. The baseline of each row is `dd` of the same cache
file to a file next to the tapes with the same block size (`conv=fsync`) and back
(from a cold page cache: `posix_fadvise(DONTNEED)` on that file only, so that other users
of the machine keep theirs): the ratio is dd seconds / mover seconds. Every figure is the
best of `--repeat` rounds (block sizes in turn, so that a slow spell of a shared machine
does not hit one size only).

`--library emulated` (the default) sweeps the emulated library on WORK's disk;
`--library vtl` starts a fresh `tgt` virtual tape library (examples/vtl) with its tape
images in WORK for each archive (a tape another archive wrote is, rightly, refused), and
the dd baseline then writes to and reads back a file in WORK: the ratio is what iSCSI,
tgtd and the mover cost over the disk the images sit on. Not a test: run it by hand, as
root.

    python3 benchmarks/bench_blocksize.py [--dir WORK] [--size 512MiB]
        [--sizes 64KiB,128KiB,256KiB,512KiB,1MiB] [--library emulated|vtl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.admin.control import call  # noqa: E402
from backend.config import parse_size  # noqa: E402
from tests import vtl as vtl_module  # noqa: E402
from tests.archive import Mount, init_archive, mount  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

MiB = 1024 * 1024


def drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dd(src: Path, dst: Path, bs: int, fsync: bool) -> float:
    dst.unlink(missing_ok=True)
    drop(src)
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", f"bs={bs}", *(["conv=fsync"] if fsync else [])],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def tape_home(m: Mount) -> None:
    wait_for(lambda: not [d for d in m.json("drives") if d["volume"]], timeout=120)


def timed(m: Mount, start, state: str) -> float:
    """Run `start()`, then time until the only file of the archive is in `state`."""
    db = sqlite3.connect(m.archive / "catalog.db", timeout=30)
    try:
        t0 = time.perf_counter()
        start(db)
        while (
            db.execute("SELECT state FROM bitfiles WHERE inode IS NOT NULL").fetchone()[0] != state
        ):
            time.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        db.close()


def one(work: Path, bs: int, size: int, vtl: bool) -> tuple[float, float, float, float]:
    if not vtl:
        return on_library(work, bs, size, [])
    lib = vtl_module.start(
        work / f"vtl-{bs}", drives=1, tapes=1, tape_size_mb=(size * 2) // MiB + 256
    )
    try:
        drives = [a for d in lib.drives for a in ("--drive", d)]
        return on_library(work, bs, size, ["--library", "scsi", "--changer", lib.changer, *drives])
    finally:
        lib.stop()
        shutil.rmtree(work / f"vtl-{bs}")


def on_library(
    work: Path, bs: int, size: int, library: list[str]
) -> tuple[float, float, float, float]:
    archive = init_archive(
        work / f"archive-{bs}",
        drives=1,
        volumes=1,
        volume_size=str(size * 2 + 256 * MiB),
        cache_size=str(size * 2 + 256 * MiB),
        options={"mover.idle_dismount": "1s"},
        extra=["--block-size", str(bs), *library],
    )
    m = mount(archive, work / f"mnt-{bs}")
    sock = archive / "run" / "reelfsd.sock"
    try:
        f = m.mnt / "data.bin"
        chunk = os.urandom(4 * MiB)
        with open(f, "wb") as out:
            for i in range(0, size, len(chunk)):
                out.write(chunk[: min(len(chunk), size - i)])
        tape_home(m)

        def flush(db: sqlite3.Connection) -> None:
            with db:
                db.execute("UPDATE requests SET urgent=1 WHERE kind='write'")
            call(sock, "wake")

        t_write = timed(m, flush, "archived")
        bfid = m.xattr(f, "bfid")
        cached = next((archive / "cache" / "data").glob(f"*/{bfid}"))
        # the emulated tapes' directory, or (a VTL) WORK, where its images should live
        tapes = work if library else archive / "library" / "tapes"
        dd_write = dd(cached, tapes / "dd.out", bs, fsync=True)
        m.release(f)
        tape_home(m)
        images = [tapes / "RF0001.tape"] if not library else (work / f"vtl-{bs}").rglob("*")
        for image in images:
            if image.is_file():
                drop(image)  # the recall reads from the disk, as dd's read below does
        ino = os.stat(f).st_ino
        t_read = timed(m, lambda db: call(sock, "recall", inodes=[ino]), "archived")
        dd_read = dd(tapes / "dd.out", archive / "cache" / "dd.in", bs, fsync=False)
        (tapes / "dd.out").unlink()
        (archive / "cache" / "dd.in").unlink()
        m.umount()
    finally:
        m.stop()
    shutil.rmtree(archive)  # gigabytes of cache and tape per round
    return t_write, t_read, dd_write, dd_read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--size", default="512MiB")
    ap.add_argument("--sizes", default="64KiB,128KiB,256KiB,512KiB,1MiB")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--library", choices=["emulated", "vtl"], default="emulated")
    a = ap.parse_args()
    size = parse_size(a.size, "--size")
    work = Path(tempfile.mkdtemp(prefix="bench-bs-", dir=a.dir))
    sizes = a.sizes.split(",")
    best: dict[str, list[float]] = {}
    for r in range(a.repeat):
        for text in sizes:
            bs = parse_size(text, "--sizes")
            got = one(work / f"round{r}", bs, size, a.library == "vtl")
            prev = best.get(text)
            best[text] = (
                list(got) if prev is None else [min(x, y) for x, y in zip(prev, got, strict=True)]
            )
    rows = [(text, *best[text]) for text in sizes]
    mib = size / MiB
    print(
        f"{a.library} library in {work}; one file of {mib:.0f} MiB per block size, "
        f"best of {a.repeat}"
    )
    print(
        f"{'block':>7} {'write MiB/s':>12} {'dd MiB/s':>9} {'ratio':>6}"
        f" {'read MiB/s':>11} {'dd MiB/s':>9} {'ratio':>6}"
    )
    for text, tw, tr, dw, dr in rows:
        print(
            f"{text:>7} {mib / tw:>12.1f} {mib / dw:>9.1f} {dw / tw:>6.2f}"
            f" {mib / tr:>11.1f} {mib / dr:>9.1f} {dr / tr:>6.2f}"
        )


if __name__ == "__main__":
    main()
