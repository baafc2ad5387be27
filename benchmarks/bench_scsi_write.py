#!/usr/bin/env python3
"""Writing to tape through iSCSI vs `dd` to a file: 1 GiB in 256 KiB records.

The baseline is `dd bs=256K conv=fsync` of the same bytes into a file on the same disk (tgt
keeps a tape as a file and fsyncs it at WRITE FILEMARKS, so both end with the data on disk).
The figure is the ratio of the two throughputs, measured in the same run. Then it says
where the time goes:

* the per-command cost (TEST UNIT READY round trips: ctypes, libiscsi, loopback, tgtd),
* the PDU size (the same writes with tgt's stock 8 KiB segments instead of 256 KiB),
* tgt's fsync (the closing WRITE FILEMARKS alone),
* a cProfile of the Python side of a slice of the writes,
* reading back: throughput, and tgtd's log line for every READ(6).

Run: python3 benchmarks/bench_scsi_write.py [--mib 1024] [--record-kib 256]
It starts (and stops, by PID) its own tgt VTL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.scsi import ScsiTapeDrive, open_library  # noqa: E402


def load_vtl():
    spec = importlib.util.spec_from_file_location("vtl", ROOT / "examples" / "vtl" / "vtl.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records(record: int, count: int) -> list[bytes]:
    pool = [os.urandom(record) for _ in range(16)]
    return [pool[i % len(pool)] for i in range(count)]


def write_tape(drive: ScsiTapeDrive, recs: list[bytes]) -> tuple[float, float]:
    """Seconds for the WRITEs, and for the closing WRITE FILEMARKS (tgt's fsync)."""
    drive.rewind()
    t0 = time.perf_counter()
    for r in recs:
        drive.write_block(r)
    t1 = time.perf_counter()
    drive.write_filemarks(1)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def dd_baseline(directory: Path, recs: list[bytes], record: int) -> float:
    src = directory / "dd-source"
    dst = directory / "dd-target"
    with open(src, "wb") as f:
        for r in recs:
            f.write(r)
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", f"bs={record}", "conv=fsync", "status=none"], check=True
    )
    elapsed = time.perf_counter() - t0
    src.unlink()
    dst.unlink()
    return elapsed


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / (1 << 20) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--record-kib", type=int, default=256)
    ap.add_argument("--slice-mib", type=int, default=128, help="size of the side experiments")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; medians reported")
    args = ap.parse_args()
    record = args.record_kib * 1024
    count = args.mib * (1 << 20) // record
    total = count * record
    vtl = load_vtl()
    work = Path(tempfile.mkdtemp(prefix="bench-scsi-", dir=os.environ.get("TMPDIR", "/tmp")))
    port = free_port()
    state = vtl.start(
        work, port=port, drives=1, slots=2, tapes=1, cleaning=False,
        tape_size_mb=args.mib + args.mib // 8 + 64,
    )  # fmt: skip
    print(f"tgt VTL pid {state.pid} on 127.0.0.1:{port}, images in {work}")
    try:
        lib = open_library(state.changer, state.drives)
        drive = lib.drives[state.drive_elements[0]]
        assert isinstance(drive, ScsiTapeDrive)
        lib.changer.move(state.slots[0], state.drive_elements[0])
        drive.load()
        recs = records(record, count)

        # 1. the figure: 1 GiB through iSCSI vs dd, alternated, medians
        runs = []
        dds = []
        for _ in range(args.repeat):
            cpu0 = cpu_seconds(state.pid)
            pcpu0 = time.process_time()
            w, fsync = write_tape(drive, recs)
            runs.append((w + fsync, w, fsync, cpu_seconds(state.pid) - cpu0,
                         time.process_time() - pcpu0))  # fmt: skip
            dds.append(dd_baseline(work, recs, record))
        runs.sort()
        tape_s, w, fsync, tgt_cpu, our_cpu = runs[len(runs) // 2]
        dd_s = sorted(dds)[len(dds) // 2]
        print(f"\n== {args.mib} MiB in {args.record_kib} KiB records ==")
        print(f"tape via iSCSI : {tape_s:7.2f} s  {mib_s(total, tape_s):7.1f} MiB/s "
              f"(WRITEs {w:.2f} s + WRITE FILEMARKS/fsync {fsync:.2f} s)")  # fmt: skip
        print(f"dd conv=fsync  : {dd_s:7.2f} s  {mib_s(total, dd_s):7.1f} MiB/s")
        print(f"ratio tape/dd  : {dd_s / tape_s:.2f}x  (median of {args.repeat}; tape runs "
              f"{', '.join(f'{r[0]:.2f}' for r in runs)} s, dd runs "
              f"{', '.join(f'{d:.2f}' for d in sorted(dds))} s)")  # fmt: skip
        print(f"CPU: this process {our_cpu:.2f} s, tgtd {tgt_cpu:.2f} s "
              f"({count} WRITE(6) commands, {drive.device.commands} commands in all)")  # fmt: skip

        # 2. per-command cost
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            drive.device.transfer(bytes(6))
        tur_us = (time.perf_counter() - t0) / n * 1e6
        per_write_us = w / count * 1e6
        print("\n== where the time goes ==")
        print(f"round trip of an empty command (TUR): {tur_us:.0f} us; "
              f"a {args.record_kib} KiB WRITE: {per_write_us:.0f} us "
              f"-> fixed per-command share {tur_us / per_write_us:.0%}")  # fmt: skip

        # ctypes: the cost of one foreign call, and how many a WRITE makes
        dev = drive.device
        lib_c, ctx = dev._lib, dev._ctx  # type: ignore[attr-defined]
        n = 100_000
        t0 = time.perf_counter()
        for _ in range(n):
            lib_c.iscsi_which_events(ctx)
        call_us = (time.perf_counter() - t0) / n * 1e6
        calls0 = dev.service_calls  # type: ignore[attr-defined]
        drive.rewind()
        for r in recs[:64]:
            drive.write_block(r)
        loops = (dev.service_calls - calls0) / 64  # type: ignore[attr-defined]
        # per command: create task, add buffer, async send, free task; per loop: get_fd,
        # which_events, service (poll is not a ctypes call)
        ctypes_calls = 4 + 3 * loops
        print(f"ctypes: {call_us:.2f} us per foreign call, ~{ctypes_calls:.0f} calls per WRITE "
              f"({loops:.1f} poll/service rounds) -> {ctypes_calls * call_us:.0f} us, "
              f"{ctypes_calls * call_us / per_write_us:.1%} of a WRITE")  # fmt: skip

        # 3. Python-side profile of a slice
        slice_n = max(1, args.slice_mib * (1 << 20) // record)
        prof = cProfile.Profile()
        drive.rewind()
        prof.enable()
        for r in recs[:slice_n]:
            drive.write_block(r)
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        total_t = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
        by_name: dict[str, float] = {}
        for (_, _, name), v in st.stats.items():  # type: ignore[attr-defined]
            by_name[name] = by_name.get(name, 0.0) + v[2]
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
        print(f"profile of {slice_n} writes ({total_t:.2f} s of own time):")
        for name, t in top:
            print(f"  {t / total_t:6.1%}  {name}")

        # 4. tgt's stock 8 KiB PDUs, on a new session
        drive.unload()
        lib.changer.move(state.drive_elements[0], state.slots[0])
        lib.close()
        for name in ("MaxRecvDataSegmentLength", "MaxXmitDataSegmentLength",
                     "FirstBurstLength", "MaxBurstLength"):  # fmt: skip
            vtl._tgtadm(state.control_port, "--op", "update", "--mode", "target", "--tid", "1",
                        "--name", name, "--value", "8192")  # fmt: skip
        lib = open_library(state.changer, state.drives)
        drive = lib.drives[state.drive_elements[0]]
        lib.changer.move(state.slots[0], state.drive_elements[0])
        drive.load()
        small_w, _ = write_tape(drive, recs[:slice_n])
        big_rate = mib_s(total, w)
        small_rate = mib_s(slice_n * record, small_w)
        print(f"8 KiB PDUs (tgt's default): {small_rate:.1f} MiB/s vs {big_rate:.1f} MiB/s "
              f"with 256 KiB PDUs ({big_rate / small_rate:.1f}x)")  # fmt: skip
        print(f"fsync at WRITE FILEMARKS: {fsync:.2f} s for {args.mib} MiB "
              f"({fsync / tape_s:.0%} of the tape run)")  # fmt: skip

        # 5. reading back, and tgtd's log
        log = Path(state.directory) / "tgtd.log"
        size0 = log.stat().st_size
        drive.rewind()
        t0 = time.perf_counter()
        for _ in range(slice_n):
            drive.read_block(record)
        rt = time.perf_counter() - t0
        grown = log.stat().st_size - size0
        print(f"read back {slice_n} records: {mib_s(slice_n * record, rt):.1f} MiB/s; "
              f"tgtd.log grew {grown} bytes ({grown / slice_n:.0f} per READ(6))")  # fmt: skip
        drive.unload()
        lib.changer.move(state.drive_elements[0], state.slots[0])
        lib.close()
    finally:
        vtl.stop(work)
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
