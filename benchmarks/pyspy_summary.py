"""Summarise py-spy raw (folded) profiles: per thread, where the samples went.

`py-spy record --format raw --threads --idle` writes one line per distinct stack:
`thread (TID): NAME;frame;frame;... COUNT`. This prints, per thread, its samples and the
frames with the most samples: self (the leaf, where the time was spent) and inclusive
(anything below a frame, to see which operation it was for). A sample's wall time is
1/rate seconds. Idle leaves (waiting in epoll, a condition, a lock) are counted apart.

    python3 benchmarks/pyspy_summary.py PROFILE.txt [--rate 250] [--top 15] [--grep TEXT]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

IDLE = re.compile(
    r"(get_events|_epoll_wait|Condition\.wait|wait_for|_thread_cache\.py|select|"
    r"_LockImpl|lock\.acquire|sleep)"
)


def load(path: Path) -> list[tuple[str, list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        out.append((frames[0], frames[1:], int(n)))
    return out


def short(frame: str) -> str:
    """`fn (path/to/module.py:123)` -> `fn (module.py:123)`, site-packages trimmed."""
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    fn, path, line = m.groups()
    parts = path.split("/")
    keep = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{fn} ({keep}:{line})"


def summarise(path: Path, rate: int, top: int, grep: str | None) -> None:
    stacks = load(path)
    threads: dict[str, Counter] = defaultdict(Counter)
    incl: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    idle: Counter = Counter()
    for thread, frames, n in stacks:
        if grep and not any(grep in f for f in frames):
            continue
        name = re.sub(r"\(\d+\)", "", thread).replace("thread ", "").strip(": ")
        totals[name] += n
        leaf = short(frames[-1]) if frames else "?"
        if frames and IDLE.search(frames[-1]):
            idle[name] += n
        threads[name][leaf] += n
        for f in dict.fromkeys(short(f) for f in frames):
            incl[name][f] += n
    print(f"{path}: {sum(totals.values())} samples at {rate} Hz")
    for name, total in totals.most_common():
        busy = total - idle[name]
        print(
            f"\n== {name}: {total} samples ({total / rate:.2f} s), "
            f"busy {busy} ({busy / rate:.2f} s), idle {idle[name]}"
        )
        print("  self (busy leaves):")
        busy_leaves = [
            (leaf, n) for leaf, n in threads[name].most_common() if not IDLE.search(leaf)
        ]
        for leaf, n in busy_leaves[:top]:
            print(f"    {n:6d} {100 * n / max(busy, 1):5.1f}%  {leaf}")
        print("  inclusive (reelfs and sqlite frames):")
        shown = 0
        for f, n in incl[name].most_common():
            if not re.search(r"(backend|mountfs|drivers|db\.py|fs\.py|staging|namespace)", f):
                continue
            print(f"    {n:6d} {100 * n / max(busy, 1):5.1f}%  {f}")
            shown += 1
            if shown >= top:
                break


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--grep", default=None, help="only stacks with a frame containing this")
    a = p.parse_args()
    for prof in a.profiles:
        summarise(prof, a.rate, a.top, a.grep)


if __name__ == "__main__":
    main()
