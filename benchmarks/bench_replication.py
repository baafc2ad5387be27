"""Replication latency A -> B -> C: from `close()` on archive A's mount to the file present
and verified at archive C, against baselines measured in the same run on the same mounts.

    python3 benchmarks/bench_replication.py [--files 1000] [--file-size 4KiB]
        [--big 1GiB] [--block 64MiB] [--parallel 4] [--skip-big] [--broker-state DIR]

Three archives on this machine: A posts its mount's changes to `xs_alice_bench` and serves
its data; `reelfs subscribe` B stores into archive B, which re-posts to `xb_bench` and
serves; `reelfs subscribe` C stores into archive C. "Present and verified at C" is the
moment C's subscriber renamed the verified file into place: the `timeCompleted` of its
201 report (same clock as A's close, one machine). Without --broker-state a private broker
is started (examples/replication/start-broker) and stopped at the end.

Rows:
  small files, replicated A->B->C   latency of each of N files written back to back on A
  small files, cp A->C (baseline)   per-file copy from A's mount to C's mount (read, write,
                                    close; no fsync, no hashing, no broker)
  1 GiB in parts, parallel streams  one file announced in --block parts at each hop; each
                                    subscriber fetches the parts over --parallel streams
  1 GiB in parts, one stream        the same with parallel = 1 (the baseline of the row above)
  1 GiB, cp A->C (baseline)         one sequential copy between the mounts
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.config import parse_size  # noqa: E402
from backend.replication import message as m  # noqa: E402
from backend.replication.broker import Broker, Consumer  # noqa: E402
from backend.replication.credentials import Credentials  # noqa: E402
from tests.archive import Mount, init_archive, mount  # noqa: E402

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


class Bench:
    def __init__(self, work: Path, state: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        env = dict(
            line.split("=", 1)
            for line in (state / "broker.env").read_text().splitlines()
            if "=" in line
        )
        self.port = int(env["REELFS_BROKER_PORT"])
        self.creds_path = work / "credentials.conf"
        shutil.copy(env["REELFS_CREDENTIALS"], self.creds_path)
        self.creds_path.chmod(0o600)
        self.creds = Credentials.load(self.creds_path)
        self.env = {**os.environ, "REELFS_CREDENTIALS": str(self.creds_path)}
        self.mounts: list[Mount] = []
        self.subs: list[subprocess.Popen] = []

    def url(self, user: str) -> str:
        return f"amqp://{user}@127.0.0.1:{self.port}/"

    def site(
        self, name: str, user: str | None, exchange: str | None, cache: str, volume: str
    ) -> Mount:
        opts: dict[str, str] = {}
        if user:
            port = free_port()
            opts = {
                "post.broker": self.url(user),
                "post.exchange": exchange or "",
                "post.base_url": f"http://127.0.0.1:{port}/{name}",
                "post.cluster": name,
                "post.blocksize": self.args.block,
                "serve.listen": f"127.0.0.1:{port}",
                "serve.url_prefix": f"/{name}",
            }
        archive = init_archive(
            self.work / name, options=opts, cache_size=cache, volumes=2, volume_size=volume
        )
        mnt = mount(
            archive, self.work / f"{name}-mnt", env={"REELFS_CREDENTIALS": str(self.creds_path)}
        )
        self.mounts.append(mnt)
        return mnt

    def subscriber(self, name: str, archive: Path, exchange: str, parallel: int) -> None:
        cfg = self.work / f"{name}.toml"
        cfg.write_text(
            "\n".join(
                [
                    f'broker = "{self.url("admin")}"',
                    f'exchange = "{exchange}"',
                    f'archive = "{archive}"',
                    f'cluster = "{name}"',
                    f'credentials = "{self.creds_path}"',
                    'report_exchange = "xr_{source}_bench"',
                    f"parallel = {parallel}",
                    f"fsync = {'false' if self.args.no_fsync else 'true'}",
                ]
            )
            + "\n"
        )
        with open(self.work / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mountfs.cli", "subscribe", "--config", str(cfg)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.subs.append(proc)
        deadline = time.monotonic() + 60
        while "subscribed to" not in (self.work / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"subscriber {name} did not start; see {name}.log")
            time.sleep(0.05)

    def stop_subscribers(self) -> None:
        for p in self.subs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
        self.subs = []

    def close(self) -> None:
        self.stop_subscribers()
        for mnt in self.mounts:
            mnt.stop()


class Reports:
    """201 reports of the subscribers, by cluster: relPath -> timeCompleted (ns)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.done: dict[str, dict[str, int]] = {}
        self.posted: dict[str, int] = {}  # relPath -> pubTime of A's announcement

    def wait(self, want: set[str], cluster: str, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while not want <= set(self.done.get(cluster, {})):
            if time.monotonic() > deadline:
                got = len(want & set(self.done.get(cluster, {})))
                raise RuntimeError(f"only {got} of {len(want)} files reached {cluster}")
            d = self.consumer.get(1.0)
            if d is None:
                continue
            d.ack()
            x = d.message()
            r = x["report"]
            if r["code"] in (201, 205):
                by = self.done.setdefault(r.get("cluster", "?"), {})
                by.setdefault(x["relPath"], m.parse_time(r["timeCompleted"]))
                self.posted.setdefault(x["relPath"], m.parse_time(x["pubTime"]))
        return {k: v for k, v in self.done[cluster].items() if k in want}


def write_file(path: Path, data_iter) -> int:
    """Write and close; the wall-clock time of the close, in ns."""
    with open(path, "wb") as f:
        for chunk in data_iter:
            f.write(chunk)
    return time.time_ns()


def copy_time(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    with open(src, "rb") as i, open(dst, "wb") as o:
        shutil.copyfileobj(i, o, 1 << 20)
    return time.perf_counter() - t0


def run(bench: Bench, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    admin = Broker(bench.url("admin"), credentials=bench.creds)
    for ex in ("xs_alice_bench", "xb_bench", "xr_alice_bench"):
        admin.declare_exchange(ex)
    admin.close()
    rep = Consumer(
        bench.url("admin"),
        "q_admin.bench.reports",
        [("xr_alice_bench", "#")],
        credentials=bench.creds,
        prefetch=2000,
    )
    rep.declare()
    rep.purge()
    reports = Reports(rep)
    big = parse_size(args.big, "--big") if not args.skip_big else 0
    cache = f"{max(1024, 3 * big // MiB + 512)}MiB"
    volume = f"{max(64, 2 * big // MiB)}MiB"  # a file must fit on one volume
    a = bench.site("siteA", "alice", "xs_alice_bench", cache, volume)
    b = bench.site("siteB", "admin", "xb_bench", cache, volume)
    c = bench.site("siteC", None, None, cache, volume)

    def start(parallel: int) -> None:
        bench.subscriber("siteB", b.archive, "xs_alice_bench", parallel)
        bench.subscriber("siteC", c.archive, "xb_bench", parallel)

    start(args.parallel)
    # -- small files: at a steady rate (latency), then all at once (throughput) -------------
    size = parse_size(args.file_size, "--file-size")
    payload = os.urandom(size)
    n = args.files
    lat_rows = []
    for mode in ("steady", "burst"):
        (a.mnt / mode).mkdir()
        closed: dict[str, int] = {}
        t0 = time.perf_counter()
        for i in range(n):
            rel = f"{mode}/f{i:05d}.dat"
            if mode == "steady":
                # paced: file i is written at t0 + i / rate
                delay = t0 + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            closed[rel] = write_file(a.mnt / rel, [payload[:-8] + i.to_bytes(8, "big")])
        at_c = reports.wait(set(closed), "siteC", 1200)
        at_b = reports.wait(set(closed), "siteB", 1200)
        total = time.perf_counter() - t0
        lat_c = [(at_c[r] - closed[r]) / 1e9 for r in closed]
        lat_b = [(at_b[r] - closed[r]) / 1e9 for r in closed]
        post = [(reports.posted[r] - closed[r]) / 1e9 for r in closed]
        lat_rows.append((mode, lat_b, lat_c, total, post))
    (c.mnt / "cp-small").mkdir()
    cp = [
        copy_time(a.mnt / f"steady/f{i:05d}.dat", c.mnt / "cp-small" / f"f{i:05d}.dat")
        for i in range(n)
    ]
    base50, base99 = pct(cp, 50), pct(cp, 99)
    what = f"{n} x {args.file_size}"
    rows.append(
        (
            f"{what} cp A->C (baseline)",
            f"p50 {base50 * 1e3:.2f} ms  p99 {base99 * 1e3:.2f} ms",
            "1 / 1",
        )
    )
    for mode, lat_b, lat_c, total, post in lat_rows:
        how = f"{args.rate:g}/s" if mode == "steady" else "burst"
        for hop, lat in (("A->B", lat_b), ("A->B->C", lat_c)):
            p50, p99 = pct(lat, 50), pct(lat, 99)
            rows.append(
                (
                    f"{what} {how}, {hop}",
                    f"p50 {p50 * 1e3:.0f} ms  p99 {p99 * 1e3:.0f} ms",
                    f"{p50 / base50:.0f} / {p99 / base99:.0f}",
                )
            )
        rows.append((f"  ({how}: end to end)", f"{n / total:.0f} files/s, {total:.1f} s", ""))
        rows.append(
            (
                f"  ({how}: close -> A's announcement)",
                f"p50 {pct(post, 50) * 1e3:.0f} ms  p99 {pct(post, 99) * 1e3:.0f} ms",
                "",
            )
        )
    if args.skip_big:
        return rows

    # -- one big file: parts in parallel streams, then one stream -----------------------------
    (a.mnt / "big").mkdir()
    results = {}
    for label, parallel in (("parallel", args.parallel), ("one stream", 1)):
        if parallel != args.parallel:
            bench.stop_subscribers()
            start(parallel)
        rel = f"big/{label.replace(' ', '-')}.bin"

        def chunks():
            for _ in range(big // (8 * MiB)):
                yield os.urandom(8 * MiB)

        t_close = write_file(a.mnt / rel, chunks())
        done = reports.wait({rel}, "siteC", 3600)
        results[label] = (done[rel] - t_close) / 1e9
        os.unlink(a.mnt / rel)  # keep the caches small for the next run
    (c.mnt / "cp-big").mkdir()
    src = a.mnt / "big" / "cp.bin"
    write_file(src, (os.urandom(8 * MiB) for _ in range(big // (8 * MiB))))
    cp_big = copy_time(src, c.mnt / "cp-big" / "cp.bin")
    one = results["one stream"]
    rows.append((f"{args.big} cp A->C (baseline)", f"{cp_big:.1f} s", f"{cp_big / one:.2f}"))
    rows.append(
        (f"{args.big} in {args.block} parts, one stream (baseline)", f"{one:.1f} s", "1.00")
    )
    par = results["parallel"]
    rows.append(
        (
            f"{args.big} in {args.block} parts, {args.parallel} streams",
            f"{par:.1f} s",
            f"{par / one:.2f}",
        )
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--file-size", default="4KiB")
    p.add_argument("--rate", type=float, default=20.0, help="files/s of the steady run")
    p.add_argument("--no-fsync", action="store_true", help="subscribers do not fsync")
    p.add_argument("--big", default="1GiB")
    p.add_argument("--block", default="64MiB")
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--skip-big", action="store_true")
    p.add_argument("--broker-state", default=os.environ.get("REELFS_BROKER_STATE"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-repl-"))
    own_broker = args.broker_state is None
    state = Path(args.broker_state) if args.broker_state else work / "broker"
    if own_broker:
        subprocess.run(
            [str(REPO / "examples/replication/start-broker"), str(state)],
            check=True,
            capture_output=True,
            timeout=240,
        )
    bench = Bench(work, state, args)
    try:
        rows = run(bench, args)
    finally:
        bench.close()
        if own_broker:
            subprocess.run(
                [str(REPO / "examples/replication/stop-broker"), str(state), "--purge"],
                capture_output=True,
                timeout=120,
            )
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'':{width}}{'result':38}ratio (p50 / p99 to the baseline)")
    for name, value, ratio in rows:
        print(f"{name:{width}}{value:38}{ratio}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
