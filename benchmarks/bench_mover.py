"""The mover against `dd` on the same disk: cache -> emulated tape, and tape -> cache.

The real path: a fresh archive (one drive, one volume, tape images on the cache's file
system) is mounted, a SIZE file written into it and fsynced; then

    write   `reelfs flush --wait FILE`: the daemon's mover mounts the tape and writes the
            file as a pax tape file (checksums computed on the data as it goes, filemark,
            sync). Timed from the daemon's `mount` event to the file's `archived_ns` in
            the catalog (the transfer), and from the flush command to `archived_ns`.
            Baseline: `dd if=CACHE_FILE of=DISK_FILE bs=256k conv=fsync`.
    recall  `reelfs release FILE`, then `reelfs recall --wait FILE` once the tape is back
            in its slot: the mover mounts it, reads the member into a temporary cache
            file while computing the checksums, verifies them, and publishes the file
            (no fsync). Timed from the `mount` event to the file's `accessed_ns`.
            Baselines: `dd if=TAPE_IMAGE of=CACHE_DIR_FILE bs=256k` with and without
            conv=fsync.

Every timed run, baseline or not, starts from a cold page cache (`sync; echo 3 >
/proc/sys/vm/drop_caches`). Ratios are dd seconds / mover seconds (1.0: as fast as dd).
Target for the write: >= 0.9.

`--in-process` also runs the mover's data path in this process on the same cached file,
with the same code the mover runs (`TapeFileWriter.add` with `Checksummer.update` as
`on_data`, then `finish`; `read_member` into a file with the checksums), with and without
the checksums, to split the cost; `--cprofile` prints the top functions of those runs.
`--py-spy DIR` records the daemon during the flush and the recall.
Not a test: run it by hand, as root.

    python3 benchmarks/bench_mover.py [--dir WORK] [--size 1GiB] [--in-process] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import harness
from harness import MiB, Timer, drop_caches, ratio_row

from backend import config
from backend.cache.checksum import Checksummer
from backend.cache.store import Cache
from drivers.emulated import create_library, open_library
from drivers.formats.pax import MemberInfo, TapeFileWriter, read_member
from tests.archive import reelfs
from tests.waiting import wait_for


def dd(src: Path, dst: Path, bs: int, fsync: bool) -> float:
    dst.unlink(missing_ok=True)
    drop_caches()
    cmd = ["dd", f"if={src}", f"of={dst}", f"bs={bs}"] + (["conv=fsync"] if fsync else [])
    with Timer() as t:
        subprocess.run(cmd, check=True, capture_output=True)
    return t.wall


def write_into(path: Path, size: int) -> None:
    buf = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left:
            left -= os.write(fd, buf[: min(MiB, left)])
        os.fsync(fd)
    finally:
        os.close(fd)


class Daemon:
    """The archive daemon's view of one file, read from the catalog."""

    def __init__(self, arch: harness.Archive, name: str) -> None:
        self.arch = arch
        ((self.bitfile_id, self.bfid),) = arch.query(
            "SELECT b.id, b.bfid FROM entries e JOIN inodes i ON i.id = e.inode "
            "JOIN bitfiles b ON b.id = i.bitfile WHERE e.name = ?",
            (name.encode(),),
        )

    def row(self) -> dict:
        cols = ("state", "size", "archived_ns", "accessed_ns", "adler32", "crc32c")
        (row,) = self.arch.query(
            f"SELECT {', '.join(cols)} FROM bitfiles WHERE id=?", (self.bitfile_id,)
        )
        return dict(zip(cols, row, strict=True))

    def mount_event_after(self, t_ns: int) -> int:
        rows = self.arch.query(
            "SELECT MIN(time_ns) FROM events WHERE kind='mount' AND time_ns >= ?", (t_ns,)
        )
        if rows[0][0] is None:
            raise SystemExit("no mount event found after the request")
        return int(rows[0][0])

    def tapes_home(self) -> bool:
        """No cartridge in any drive, as the emulated changer's own state says (the
        library's state, not the catalog: what counts is that the tape was unloaded)."""
        lib = self.arch.path / "library"
        drives = [d["address"] for d in json.loads((lib / "library.json").read_text())["drives"]]
        elements = json.loads((lib / "state.json").read_text())["elements"]
        return all(elements.get(str(a)) is None for a in drives)


try:
    from crc32c import crc32c as _crc32c
    from zlib_ng.zlib_ng import adler32 as _ng_adler32
except ImportError:  # the variant is skipped
    _ng_adler32 = None


class ZlibNgChecksummer(Checksummer):
    """`Checksummer` with zlib-ng's adler32 (same values, SIMD): what the proposed change
    to backend/checksum.py would give. Only when the zlib-ng package is importable."""

    __slots__ = ()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.adler = _ng_adler32(data, self.adler)
        self.crc = _crc32c(data, self.crc)
        self.length += len(data)


def in_process(src: Path, work: Path, size: int, block: int, profile: bool) -> dict:
    """The mover's data path, in this process: write and read back, with the mover's
    checksums, without any, and (if importable) with zlib-ng's adler32."""
    out: dict[str, float] = {}
    variants: list[str] = ["", " (no sums)"] + ([" (zlib-ng)"] if _ng_adler32 else [])
    for variant in variants:
        sums = variant != " (no sums)"
        make = ZlibNgChecksummer if variant == " (zlib-ng)" else Checksummer
        libdir = work / f"inproc-{len(out)}"
        create_library(libdir, drives=1, slots=2, volumes=["BENCH1"], capacity=2 * size + 64 * MiB)
        library = open_library(libdir)
        (address,) = library.drives
        drive = library.drives[address]
        slot = next(e.address for e in library.changer.inventory().elements if e.full)
        library.changer.move(slot, address)
        drive.load()
        drive.set_block_size(block)
        info = MemberInfo(name="bench/file", size=size, mtime_ns=time.time_ns(), mode=0o644)
        ck = make()
        prof = cProfile.Profile() if profile else None
        drop_caches()
        with Timer() as t:
            if prof:
                prof.enable()
            writer = TapeFileWriter(drive, block)
            with open(src, "rb", buffering=0) as f:
                writer.add(info, f, on_data=ck.update if sums else None)
            writer.finish()
            if prof:
                prof.disable()
        out[f"write{variant}"] = t.wall
        if prof:
            _print_profile(prof, f"in-process write{variant}")
        dest = work / "recalled"
        rk = make()
        drive.locate(0)
        drop_caches()
        prof = cProfile.Profile() if profile else None
        with Timer() as t:
            if prof:
                prof.enable()
            with open(dest, "wb", buffering=0) as f:
                read_member(drive, block, 0, f, on_data=rk.update if sums else None)
            if prof:
                prof.disable()
        out[f"recall{variant}"] = t.wall
        if prof:
            _print_profile(prof, f"in-process recall{variant}")
        if sums and (rk.adler, rk.crc) != (ck.adler, ck.crc):
            raise SystemExit("in-process recall: checksums differ")
        dest.unlink()
        drive.unload()
        library.close()
        shutil.rmtree(libdir)
    return out


def _print_profile(prof: cProfile.Profile, title: str) -> None:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
    print(f"--- cProfile: {title} ---")
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:3000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--size",
        type=harness.size_arg,
        default=1024 * MiB,
        help="bytes of the file: 1GiB, 64MiB; a plain number is MiB",
    )
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--cprofile", action="store_true", help="profile the in-process runs")
    parser.add_argument("--py-spy", type=Path, default=None, dest="pyspy")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: every run starts by dropping the page cache")
    size = args.size
    work = Path(tempfile.mkdtemp(prefix="bench-mover-", dir=args.dir))
    disk = work / "disk"
    disk.mkdir()
    arch = harness.fresh_archive(work, file_size=size, cache_size=4 * size + 1024 * MiB)
    rows: list[list[str]] = []
    notes: list[str] = []
    inproc: dict[str, float] = {}
    try:
        cfg_block = config.load(arch.path).library.block_size
        target = arch.mnt / "big"
        write_into(target, size)
        f = Daemon(arch, "big")
        cache = Cache(arch.cache_dir, 1, 0.9, 0.5)
        cached = cache.path(f.bfid)
        if not harness.same_filesystem(cached, disk) or not harness.same_filesystem(
            arch.path / "library", disk
        ):
            raise SystemExit("cache, tape images and the work directory differ in file system")
        print(f"work directory {work}; daemon pid {arch.pid}; block size {cfg_block}")

        # write: dd baseline, then the mover
        dd_w = dd(cached, disk / "dd-write", cfg_block, fsync=True)
        (disk / "dd-write").unlink()
        drop_caches()
        c0 = harness.cpu_seconds(arch.pid)
        with harness.pyspy(arch.pid, args.pyspy / "flush.txt" if args.pyspy else None):
            t0 = time.time_ns()
            with Timer() as cmd:
                reelfs("flush", "--wait", "--timeout", "3600", str(target))
        cpu_w = harness.cpu_seconds(arch.pid) - c0
        bf = f.row()
        if bf["state"] != "archived":
            raise SystemExit(f"flush did not archive the file: {bf}")
        ((volume,),) = arch.query("SELECT volume FROM tape_copies WHERE bitfile=?", (f.bitfile_id,))
        tape = arch.path / "library" / "tapes" / f"{volume}.tape"
        mounted = f.mount_event_after(t0)
        transfer_w = (bf["archived_ns"] - mounted) / 1e9
        rows.append(
            ratio_row(
                "write: mount event -> archived", dd_w, transfer_w, 0.9, f"daemon CPU {cpu_w:.2f} s"
            )
        )
        rows.append(
            ratio_row(
                "write: flush command -> archived",
                dd_w,
                (bf["archived_ns"] - t0) / 1e9,
                None,
                f"flush --wait returned after {cmd.wall:.3f} s",
            )
        )

        # recall: wait for the tape to go home, release, then recall
        wait_for(f.tapes_home, timeout=600, what="the tape to be dismounted")
        reelfs("release", str(target))
        if f.row()["state"] != "released":
            raise SystemExit("release did not release the file")
        dd_r = dd(tape, arch.cache_dir / "dd-recall", cfg_block, fsync=False)
        dd_rs = dd(tape, arch.cache_dir / "dd-recall", cfg_block, fsync=True)
        (arch.cache_dir / "dd-recall").unlink()
        drop_caches()
        c0 = harness.cpu_seconds(arch.pid)
        with harness.pyspy(arch.pid, args.pyspy / "recall.txt" if args.pyspy else None):
            t0 = time.time_ns()
            with Timer() as cmd:
                reelfs("recall", "--wait", "--timeout", "3600", str(target))
        cpu_r = harness.cpu_seconds(arch.pid) - c0
        bf = f.row()
        if bf["state"] != "archived":
            raise SystemExit(f"recall did not bring the file back: {bf}")
        mounted = f.mount_event_after(t0)
        transfer_r = (bf["accessed_ns"] - mounted) / 1e9
        rows.append(
            ratio_row(
                "recall: mount event -> cached",
                dd_r,
                transfer_r,
                None,
                f"vs dd without fsync; daemon CPU {cpu_r:.2f} s",
            )
        )
        rows.append(
            ratio_row(
                "recall: mount event -> cached",
                dd_rs,
                transfer_r,
                None,
                "vs dd conv=fsync (the recall does not fsync)",
            )
        )
        rows.append(
            ratio_row(
                "recall: recall command -> cached",
                dd_r,
                (bf["accessed_ns"] - t0) / 1e9,
                None,
                f"recall --wait returned after {cmd.wall:.3f} s",
            )
        )
        notes.append(
            f"file {f.bfid}: {bf['size']} bytes, adler32 {bf['adler32']:08x}; "
            f"tape image {tape.name}: {tape.stat().st_size} bytes"
        )
        arch.stop()
        if args.in_process:
            inproc = in_process(cached, work, size, cfg_block, args.cprofile)
            rows.append(
                ratio_row(
                    "in-process write",
                    dd_w,
                    inproc["write"],
                    0.9,
                    "TapeFileWriter + Checksummer, no daemon",
                )
            )
            rows.append(
                ratio_row(
                    "in-process write, no sums",
                    dd_w,
                    inproc["write (no sums)"],
                    None,
                    "on_data=None",
                )
            )
            rows.append(
                ratio_row(
                    "in-process recall",
                    dd_r,
                    inproc["recall"],
                    None,
                    "read_member + Checksummer, vs dd without fsync",
                )
            )
            rows.append(
                ratio_row(
                    "in-process recall, no sums",
                    dd_r,
                    inproc["recall (no sums)"],
                    None,
                    "on_data=None",
                )
            )
            if "write (zlib-ng)" in inproc:
                rows.append(
                    ratio_row(
                        "in-process write, zlib-ng adler32",
                        dd_w,
                        inproc["write (zlib-ng)"],
                        0.9,
                        "the proposed change to backend/checksum.py",
                    )
                )
                rows.append(
                    ratio_row(
                        "in-process recall, zlib-ng adler32",
                        dd_r,
                        inproc["recall (zlib-ng)"],
                        None,
                        "the proposed change, vs dd without fsync",
                    )
                )
    finally:
        arch.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{size / MiB:.0f} MiB; ratio = dd s / mover s")
    harness.print_table(["operation", "dd s", "mover s", "ratio", "target", "result", "note"], rows)
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
