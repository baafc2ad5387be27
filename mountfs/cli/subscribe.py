"""`reelfs subscribe` and `reelfs watch`: the replication commands that run in the foreground.

`reelfs subscribe --config FILE [--once] [--timeout S]` replicates what a broker announces
into a mounted archive (`backend.replication.subscribe`); `reelfs watch DIR --config FILE`
announces the changes of an ordinary directory (`backend.replication.watch_service`). Both
take a TOML file with sr3 option names (reelfs-subscribe(5)) and exit 0, 1 (failed, or work
left at the timeout) or 2 (bad configuration or credentials), with one line on stderr.
Here the arguments are parsed and the failure printed; the backend runs the service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

# replication is imported by its commands only: every other reelfs command would pay for it


def cmd_subscribe(a: argparse.Namespace) -> int:
    from backend.replication.running import RunError
    from backend.replication.subscribe.run import run_subscriber

    try:
        return run_subscriber(
            a.config, state_db=a.state_db, once=a.once, timeout=a.timeout, verbosity=a.verbose
        )
    except RunError as e:
        print(f"reelfs subscribe: {e}", file=sys.stderr)
        return e.code


def cmd_watch(a: argparse.Namespace) -> int:
    from backend.replication.running import RunError
    from backend.replication.watch_service import run_watcher

    try:
        return run_watcher(
            a.directory,
            a.config,
            state_db=a.state_db,
            once=a.once,
            timeout=a.timeout,
            verbosity=a.verbose,
        )
    except RunError as e:
        print(f"reelfs watch: {e}", file=sys.stderr)
        return e.code


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add(
        "subscribe",
        cmd_subscribe,
        "replicate what a broker announces into a mounted archive (one hop; foreground)",
    )
    sp.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    sp.add_argument("--state-db", metavar="PATH", help="state DB (default: beside the config)")
    sp.add_argument("--once", action="store_true", help="process what is queued and due, then exit")
    sp.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")
    sp.add_argument("--verbose", "-v", action="count", default=0)

    sp = add("watch", cmd_watch, "announce the changes of an ordinary directory (foreground)")
    sp.add_argument("directory", metavar="DIR", help="directory to watch (not an archive)")
    sp.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    sp.add_argument("--state-db", metavar="PATH", help="state DB (default: beside the config)")
    sp.add_argument(
        "--once",
        action="store_true",
        help="post what differs from the last run, wait until published, and exit",
    )
    sp.add_argument("--timeout", type=float, default=300.0, metavar="S", help="limit for --once")
    sp.add_argument("--verbose", "-v", action="count", default=0)
