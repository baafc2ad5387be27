"""How much the pax writer and reader cost over bare record loops (not a test: run it).

    python3 -m tests.formats.bench_pax [--size-mib 1024] [--block-kib 256] [--repeat 3]

The drive is a fast in-memory one: `write_block` copies the record into a buffer of its
own (what a real drive's DMA costs, no more), `read_block` returns a record it already
holds. Every figure is the best of `--repeat` runs and is printed as a ratio against the
baseline measured in the same run:

* write, framing only: a source whose `readinto` costs nothing, against the bare
  `write_block` loop of the same number of records;
* write, from /dev/zero: a real `readinto` per record, against the loop `readinto` +
  `write_block` that `dd` would do;
* read: `read_member` into a sink, against the loop `read_block` + `write` to the same
  sink (the drive returns a new `bytes` per record, as a real driver's read does).
"""

from __future__ import annotations

import argparse
import io
import time

from drivers.formats.pax import MemberInfo, TapeFileWriter, read_member
from drivers.tape import FilemarkDetected
from tests.formats.memdrive import MemDrive


class SinkDrive(MemDrive):
    """Copies each record into one buffer of its own and keeps only the first one."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.sink = bytearray(block)
        self.count = 0

    def write_block(self, data) -> bool:
        self.sink[:] = data
        if not self.objects:
            self.objects.append(bytes(data))
        self.count += 1
        return False

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        pass


class ReplayDrive(MemDrive):
    """Returns `first`, then `rest` until `count` records were read, then a filemark."""

    def __init__(self, first: bytes, rest: bytes, count: int) -> None:
        super().__init__()
        self.first, self.rest, self.count, self.done = first, bytearray(rest), count, 0

    def read_block(self, max_size: int) -> bytes:
        if self.done == self.count:
            raise FilemarkDetected()
        self.done += 1
        # a fresh object per record, as a real driver's read returns
        return self.first if self.done == 1 else bytes(self.rest)


class NoCostSource(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return len(b)


class Sink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--block-kib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size, block = args.size_mib << 20, args.block_kib << 10
    # header (3 blocks with a pax header), data, end of archive: the records the writer makes
    records = -(-(3 * 512 + size + 1024) // block)
    info = MemberInfo(
        "bench/file.bin", size, 1_700_000_000_123_456_789, 0o644, records={"REELFS.bfid": "B"}
    )

    def bare_write() -> None:
        d = SinkDrive(block)
        mv = memoryview(bytearray(block))
        for _ in range(records):
            d.write_block(mv)

    def dd_write() -> None:
        d = SinkDrive(block)
        mv = memoryview(bytearray(block))
        with open("/dev/zero", "rb", buffering=0) as src:
            for _ in range(records):
                src.readinto(mv)
                d.write_block(mv)

    def dev_zero() -> io.RawIOBase:
        return open("/dev/zero", "rb", buffering=0)

    def pax_write(src_factory) -> None:
        d = SinkDrive(block)
        w = TapeFileWriter(d, block)
        with src_factory() as src:
            w.add(info, src)
        assert w.finish() == records == d.count

    probe = SinkDrive(block)
    w = TapeFileWriter(probe, block)
    w.add(info, NoCostSource())
    w.finish()
    first, rest = probe.objects[0], bytes(block)

    def bare_read() -> None:
        d = ReplayDrive(first, rest, records)
        sink = Sink()
        try:
            while True:
                sink.write(memoryview(d.read_block(block)))
        except FilemarkDetected:
            pass

    def pax_read() -> None:
        read_member(ReplayDrive(first, rest, records), block, 0, Sink())

    r = args.repeat
    t_bare = best(bare_write, r)
    t_frame = best(lambda: pax_write(NoCostSource), r)
    t_dd = best(dd_write, r)
    t_zero = best(lambda: pax_write(dev_zero), r)
    t_bread = best(bare_read, r)
    t_pread = best(pax_read, r)
    print(f"{args.size_mib} MiB member, {args.block_kib} KiB records ({records} records)")
    rows = [
        ("write, framing only", t_frame, "bare write_block loop", t_bare),
        ("write, /dev/zero source", t_zero, "readinto + write_block loop", t_dd),
        ("read_member to a sink", t_pread, "read_block + write loop", t_bread),
    ]
    for what, t, base, tb in rows:
        print(f"{what:24} {t:.3f}s vs {base} {tb:.3f}s = {t / tb:.3f}x")


if __name__ == "__main__":
    main()
