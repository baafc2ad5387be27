"""What the archive knows, at a glance and in tables: `reelfs status`, `volumes`,
`drives`, `queue`, `events` and `check`; every listing also as `--json`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from backend.admin import registry
from backend.admin.control import ControlError, DaemonNotRunning, call
from backend.names import printable
from mountfs import locate, views
from mountfs.cli.console import EXIT_FAIL, archive_catalog, err, out


def cmd_status(a: argparse.Namespace) -> int:
    with archive_catalog(a) as (config, cat):
        st = views.status(cat, config, _daemon_status(config))
        st["stale_mounts"] = locate.stale_mounts(config.archive)
    if a.json:
        print(json.dumps(st, default=str))
    else:
        views.print_status(out, st)
    return 0


def _listing(
    a: argparse.Namespace, fetch: Callable[[Any], list[dict]], title: str, columns: list[str]
) -> int:
    with archive_catalog(a) as (_config, cat):
        rows = fetch(cat)
    if a.json:
        print(json.dumps(rows, default=str))
    else:
        views.print_table(out, title, rows, columns)
    return 0


def cmd_volumes(a: argparse.Namespace) -> int:
    return _listing(a, views.volumes, "Volumes", views.VOLUME_COLUMNS)


def cmd_drives(a: argparse.Namespace) -> int:
    with archive_catalog(a) as (config, cat):
        rows = views.drives(cat, _daemon_status(config))
    if a.json:
        print(json.dumps(rows, default=str))
    else:
        views.print_table(out, "Drives", rows, views.drive_columns(rows))
    return 0


def _daemon_status(config: Any) -> dict | None:
    try:
        return call(config.socket_path, "status", timeout=10)
    except (DaemonNotRunning, ControlError):
        return None


def cmd_queue(a: argparse.Namespace) -> int:
    return _listing(
        a, lambda c: views.queue(c, None if a.all else 100), "Queue", views.QUEUE_COLUMNS
    )


def cmd_events(a: argparse.Namespace) -> int:
    return _listing(a, lambda c: views.events(c, a.limit, a.kind), "Events", views.EVENT_COLUMNS)


def cmd_check(a: argparse.Namespace) -> int:
    with archive_catalog(a) as (config, _cat):
        answer = registry.run(config, "catalog.check", repair=a.repair)
    if a.json:
        print(json.dumps({"ok": answer["consistent"], **answer}))
        return 0 if answer["consistent"] else EXIT_FAIL
    for name, n in answer["repaired"].items():
        out.print(f"repaired: {name}: {n}")
    for p in answer["problems"]:
        err.print(f"reelfs: catalog problem: {printable(str(p))}")
    if answer["consistent"]:
        out.print("catalog consistent")
    return 0 if answer["consistent"] else EXIT_FAIL


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    add("status", cmd_status, "drives, queue, cache and volumes at a glance")
    add("volumes", cmd_volumes, "list the tape volumes")
    add("drives", cmd_drives, "list the tape drives")
    sp = add("queue", cmd_queue, "list queued and running requests")
    sp.add_argument("--all", action="store_true")
    sp = add("events", cmd_events, "recent events of the archive")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--kind", default=None)
    sp = add("check", cmd_check, "check the catalog's invariants")
    sp.add_argument(
        "--repair", action="store_true", help="restore what is safe (re-queue lost writes)"
    )
