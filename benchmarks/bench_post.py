"""Posts per second: durable outbox -> RabbitMQ with publisher confirms, against baselines
measured in the same run on the same broker.

    python3 benchmarks/bench_post.py [--count N] [--broker-state DIR]

Without --broker-state (or $REELFS_BROKER_STATE) a private broker is started with
examples/replication/start-broker in a temporary directory and stopped at the end. All
messages go to one durable queue as persistent messages, so a confirm means "on disk".

Rows (ratios are against the first one):
  raw publish, no confirms      py-amqp basic_publish in a loop: the upper bound
  confirm per message           Broker.publish: one round trip per message (500 of them)
  batched confirms (500)        Broker.publish_batch: publish 500, then wait for the acks
  outbox end to end             rows enqueued in one transaction, then Publisher drains
                                them (batches of 500, delete after confirm)
  outbox, 1 row/transaction     the same, each row enqueued in its own committed transaction
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.catalog.outbox import open_state_db, pending_count  # noqa: E402
from backend.replication import message as m  # noqa: E402
from backend.replication.broker import Broker, make_amqp_message  # noqa: E402
from backend.replication.credentials import Credentials  # noqa: E402
from backend.replication.outbox import Publisher, enqueue  # noqa: E402

EXCHANGE = "xs_alice_bench"
QUEUE = "q_alice.bench.post"


def bodies(n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(n):
        msg = m.build_message(
            base_url="http://127.0.0.1:8080/srv/data",
            rel_path=f"bench/d{i % 16}/file{i:07d}.nc",
            identity={"method": "sha512", "value": "A" * 86 + "=="},
            size=i,
            mtime_ns=1_764_000_000_000_000_000 + i,
            mode=0o644,
            source="alice",
        )
        out.append((EXCHANGE, m.topic_for(msg["relPath"]), m.encode(msg)))
    return out


def wait_queue_depth(channel, expected: int, timeout: float = 120.0) -> None:
    """Wait until the broker holds `expected` messages in the queue (all routed)."""
    deadline = time.monotonic() + timeout
    depth = 0
    while time.monotonic() < deadline:
        _, depth, _ = channel.queue_declare(QUEUE, passive=True)
        if depth >= expected:
            return
        time.sleep(0.05)
    raise RuntimeError(f"queue holds {depth} of {expected} messages")


def run(state: Path, count: int) -> None:
    env = dict(
        line.split("=", 1)
        for line in (state / "broker.env").read_text().splitlines()
        if "=" in line
    )
    url = f"amqp://alice@127.0.0.1:{env['REELFS_BROKER_PORT']}/"
    creds = Credentials.load(env["REELFS_CREDENTIALS"])
    # A queue nobody consumes from: its depth tells when every message was routed.
    admin = Broker(url, credentials=creds)
    admin.connect()
    ch = admin.conn.channel()
    ch.exchange_declare(EXCHANGE, "topic", durable=True, auto_delete=False)
    ch.queue_declare(QUEUE, durable=True, auto_delete=False)
    ch.queue_bind(QUEUE, EXCHANGE, "v03.#")
    items = bodies(count)
    results: list[tuple[str, float]] = []

    def measure(name: str, fn, n: int = count, record: bool = True) -> None:
        ch.queue_purge(QUEUE)
        t0 = time.perf_counter()
        fn(items[:n])
        wait_queue_depth(ch, n)
        rate = n / (time.perf_counter() - t0)
        if record:
            results.append((name, rate))
            print(f"  {name:32s} {rate:10.0f} msg/s ({n} messages)", file=sys.stderr)

    def raw(items) -> None:
        b = Broker(url, credentials=creds)
        b.connect()
        b.declare_exchange(EXCHANGE)
        # A plain channel without confirm mode: fire and forget.
        ch = b.conn.channel()
        for ex, key, body in items:
            ch.basic_publish(make_amqp_message(body), ex, key)
        b.close()

    def per_message(items) -> None:
        with Broker(url, credentials=creds) as b:
            for ex, key, body in items:
                b.publish(ex, key, body)

    def batched(items) -> None:
        with Broker(url, credentials=creds) as b:
            for i in range(0, len(items), 500):
                assert b.publish_batch(items[i : i + 500]) == len(items[i : i + 500])

    def outbox(one_per_transaction: bool):
        def go(items) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "outbox.db"
                conn = open_state_db(db)
                if not one_per_transaction:
                    conn.execute("BEGIN")
                for ex, key, body in items:
                    enqueue(conn, ex, key, m.decode(body, None))
                if not one_per_transaction:
                    conn.execute("COMMIT")
                pub = Publisher(db, url, credentials=creds, batch_size=500)
                assert pub.run_until_empty(300)
                assert pending_count(conn) == 0
                pub.close()
                conn.close()

        return go

    print(f"posting {count} v03 messages ({len(items[0][2])} bytes each)", file=sys.stderr)
    measure("warm-up", raw, min(count, 1000), record=False)
    measure("raw publish, no confirms", raw)
    # one round trip each: a sample is enough for the rate
    measure("confirm per message", per_message, min(count, 500))
    measure("batched confirms (500)", batched)
    measure("outbox end to end", outbox(False))
    measure("outbox, 1 row/transaction", outbox(True))
    ch.queue_delete(QUEUE)
    admin.close()

    base = results[0][1]
    print()
    print(f"{'method':34s}{'msg/s':>10s}{'vs raw':>9s}{'vs per-msg':>12s}")
    per_msg = results[1][1]
    for name, rate in results:
        print(f"{name:34s}{rate:10.0f}{rate / base:9.2f}{rate / per_msg:12.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--broker-state", default=os.environ.get("REELFS_BROKER_STATE"))
    args = parser.parse_args()
    if args.broker_state:
        run(Path(args.broker_state), args.count)
        return 0
    start = REPO / "examples" / "replication" / "start-broker"
    stop = REPO / "examples" / "replication" / "stop-broker"
    with tempfile.TemporaryDirectory(prefix="reelfs-bench-broker-") as tmp:
        subprocess.run([str(start), tmp], check=True, stdout=subprocess.DEVNULL)
        try:
            run(Path(tmp), args.count)
        finally:
            subprocess.run([str(stop), tmp], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
