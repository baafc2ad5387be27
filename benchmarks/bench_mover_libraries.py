"""The mover's write path on the two kinds of library, against dd, in one run.

For each library the benchmark does what a mover does for one file: the changer moves a
blank cartridge into a drive, the drive loads it in fixed 256 KiB records, the file is
written as a pax tape file (`TapeFileWriter.add` with the checksums computed on the data,
then `finish`: end of archive, filemark, sync), and the cartridge goes home. The source
is the same file, read from a cold page cache every time.

    emulated   drivers.emulated, tape images on the same disk as the source
    iscsi      drivers.scsi over iSCSI to a private tgt VTL on 127.0.0.1 (tgt's images
               on the same disk)
    dd         dd if=SOURCE of=FILE bs=256k conv=fsync (the baseline)

Ratios are dd seconds / library seconds. Not a test: run it by hand, as root.

    python3 benchmarks/bench_mover_libraries.py [--size 1GiB] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.cache.checksum import Checksummer  # noqa: E402
from backend.config import parse_size  # noqa: E402
from drivers.formats.pax import MemberInfo, TapeFileWriter  # noqa: E402
from drivers.tape import ElementType, Library  # noqa: E402

BLOCK = 256 * 1024


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dd(src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", "bs=256k", "conv=fsync"], check=True, capture_output=True
    )
    return time.perf_counter() - t0


def mover_write(lib: Library, src: Path, size: int) -> float:
    """One file to tape the way a mover writes it; seconds from the changer move to home."""
    inv = lib.changer.inventory()
    address, drive = sorted(lib.drives.items())[0]
    slot = next(
        e
        for e in inv.of_type(ElementType.SLOT)
        if e.full and e.barcode and not e.barcode.startswith("CLN")
    )
    drop_caches()
    t0 = time.perf_counter()
    lib.changer.move(slot.address, address)
    drive.load()
    drive.set_block_size(BLOCK)
    drive.rewind()
    ck = Checksummer()
    writer = TapeFileWriter(drive, BLOCK)
    with open(src, "rb", buffering=0) as f:
        writer.add(
            MemberInfo(name="bench/file", size=size, mtime_ns=time.time_ns(), mode=0o644),
            f,
            on_data=ck.update,
        )
    writer.finish()
    drive.unload()
    lib.changer.move(address, slot.address)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    size = parse_size(a.size)
    work = Path(tempfile.mkdtemp(prefix="reelfs-bench-libs-", dir="/var/tmp"))
    from drivers.emulated import create_library
    from drivers.emulated import open_library as open_emulated
    from drivers.scsi import open_library as open_scsi
    from tests import vtl as vtlmod

    vtl = None
    try:
        src = work / "source"
        with open(src, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size // len(chunk)):
                f.write(chunk)
        tape_mb = size // 2**20 + 64
        create_library(
            work / "emu", drives=1, slots=3, volumes=["BE0001"], capacity=tape_mb * 2**20
        )
        vtl = vtlmod.start(work / "vtl", drives=1, tapes=1, tape_size_mb=tape_mb, prefix="BS")
        emu = open_emulated(work / "emu")
        scsi = open_scsi(vtl.changer, vtl.drives)
        times: dict[str, list[float]] = {"dd": [], "emulated": [], "iscsi": []}
        for _ in range(a.runs):
            times["dd"].append(dd(src, work / "dd.out"))
            times["emulated"].append(mover_write(emu, src, size))
            times["iscsi"].append(mover_write(scsi, src, size))
        emu.close()
        scsi.close()
        base = statistics.median(times["dd"])
        mib = size / 2**20
        print(f"mover write of {a.size} in {BLOCK // 1024} KiB records, median of {a.runs}")
        print(f"{'path':<12}{'seconds':>10}{'MiB/s':>10}{'vs dd':>8}")
        for name in ("dd", "emulated", "iscsi"):
            t = statistics.median(times[name])
            print(f"{name:<12}{t:>10.2f}{mib / t:>10.0f}{base / t:>8.2f}")
    finally:
        if vtl is not None:
            vtl.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
