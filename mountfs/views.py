"""What the CLI shows: catalog queries shaped as rows, rich tables, progress bars."""

from __future__ import annotations

import datetime as dt
import stat
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from backend.catalog import events as eventlog
from backend.catalog import reports
from backend.catalog.db import Catalog
from backend.catalog.drives import DriveTable
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RECALL, RequestQueue
from backend.catalog.volumes import VolumeClerk
from backend.config import Config, format_size
from backend.names import printable, with_b64

VOLUME_COLUMNS = [
    "label",
    "state",
    "family",
    "used",
    "deleted",
    "capacity",
    "files",
    "mounts",
    "home",
    "error",
]
DRIVE_COLUMNS = ["name", "state", "session", "volume", "reason"]
WORKER_COLUMNS = ["worker", "liveness", "restarts", "busy_waits", "last_error"]
QUEUE_COLUMNS = ["id", "kind", "state", "path", "family", "volume", "size", "age", "tries", "error"]
EVENT_COLUMNS = ["time", "level", "kind", "subject", "message"]


class WaitTimeout(RuntimeError):
    """A `--wait` ran out of time."""

    pass


def _time(ns: int | None) -> str | None:
    if not ns:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9).isoformat(timespec="seconds")


def volumes(cat: Catalog) -> list[dict[str, Any]]:
    rows = reports.volumes(cat)
    copies = reports.copies_by_volume(cat)
    return [
        {
            "label": r[0],
            "state": r[1],
            "family": r[2],
            "used": r[3],
            "capacity": r[4],
            "files": r[5],
            "mounts": r[6],
            "home": r[7],
            "error": r[8],
            "media_type": r[9],
            "inserted": _time(r[10]),
            "last_mount": _time(r[11]),
            "next_fileno": r[12],
            "eod_block": r[13],
            "uses": r[14],
            # tape held by removed or overwritten files' copies: reclaimable by repack
            "copies": copies.get(r[0], (0, 0, 0, 0))[0],
            "deleted_copies": copies.get(r[0], (0, 0, 0, 0))[2],
            "deleted": copies.get(r[0], (0, 0, 0, 0))[3],
        }
        for r in rows
    ]


def drives(cat: Catalog, daemon: dict | None = None) -> list[dict[str, Any]]:
    """The drives table, with each mover's liveness, restarts and last error when the
    daemon runs (`daemon`: its status)."""
    movers = {m["drive"]: m for m in (daemon or {}).get("movers", [])}
    rows = [
        {
            "name": d.name,
            "state": d.state,
            "session": d.session,
            "volume": d.volume,
            "reason": d.reason,
            "address": d.address,
            "serial": d.serial,
            "updated": _time(d.updated_ns),
        }
        for d in DriveTable(cat).all()
    ]
    for r in rows:
        m = movers.get(r["name"])
        if m is not None:
            r["mover"] = _liveness(m)
            r["restarts"] = m.get("restarts", 0)
            r["last_error"] = m.get("last_error")
    return rows


def _liveness(w: dict[str, Any]) -> str:
    """alive / dead, with the supervisor's state when it says more (paused, gave up)."""
    state = w.get("state")
    word = "alive" if w.get("alive") else "dead"
    return f"{word} ({state})" if state and state not in ("running",) else word


def workers(daemon: dict | None) -> list[dict[str, Any]]:
    """The daemon's other long-running workers (poster, publisher, eviction)."""
    return [
        {
            "worker": w["worker"],
            "liveness": _liveness(w),
            "restarts": w.get("restarts", 0),
            "busy_waits": w.get("busy_waits", 0),
            "last_error": w.get("last_error"),
        }
        for w in (daemon or {}).get("workers", [])
    ]


def queue(cat: Catalog, limit: int | None) -> list[dict[str, Any]]:
    ns = Namespace(cat)
    now = time.time_ns()
    rows = reports.queue(cat, limit)
    return [
        with_b64(
            {
                "id": r[0],
                "kind": r[1],
                "state": r[2],
                "path": ns.path_of(r[3]) if r[3] is not None else None,
                "family": r[4],
                "volume": r[5],
                "size": r[6],
                "age": round((now - r[7]) / 1e9, 1),
                "tries": r[8],
                "error": r[9],
                "bfid": r[10],
                "urgent": bool(r[11]),
                "drive": r[12],
            },
            "path",
        )
        for r in rows
    ]


def events(cat: Catalog, limit: int, kind: str | None) -> list[dict[str, Any]]:
    out = []
    for e in reversed(eventlog.recent(cat, kind=kind, limit=limit)):
        e["time"] = _time(e.pop("time_ns"))
        e["details"] = with_b64(e["details"], "path", "old_path")
        out.append(e)
    return out


def file_info(cat: Catalog, config: Config, inode: int, path: str) -> dict[str, Any]:
    ns = Namespace(cat)
    node = ns.get(inode)
    info: dict[str, Any] = {
        "path": path,
        "archive_path": ns.path_of(inode),
        "inode": inode,
        "type": (
            "directory"
            if node.is_dir
            else "file"
            if node.is_reg
            else "symlink"
            if stat.S_ISLNK(node.mode)
            else "special"
        ),
        "mode": oct(stat.S_IMODE(node.mode)),
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime": _time(node.mtime_ns),
    }
    fam = ns.get_xattr(inode, b"user.reelfs.file_family")
    info["family"] = fam.decode() if fam else "default"
    if node.bitfile is not None:
        files = FileClerk(cat, config.archive_id)
        bf = files.get(node.bitfile)
        if bf is not None:
            queue = RequestQueue(cat)
            recalling = queue.has(bf.id, RECALL)
            writing = queue.write_state(bf.id)
            info.update(
                {
                    "state": "recalling" if bf.state == "released" and recalling else bf.state,
                    "bfid": bf.bfid,
                    "version": bf.version,
                    "family": bf.family,
                    "adler32": None if bf.adler32 is None else f"{bf.adler32:08x}",
                    "crc32c": None if bf.crc32c is None else f"{bf.crc32c:08x}",
                    "pinned": bool(bf.pinned),
                    "archived": _time(bf.archived_ns),
                    "error": bf.error,
                    "copies": [
                        {
                            "volume": c.volume,
                            "fileno": c.fileno,
                            "block": c.block + c.record,
                            "location": c.location,
                            "copy": c.copy,
                        }
                        for c in files.copies(bf.id)
                    ],
                    "write_request": writing,
                }
            )
    return with_b64(info, "path", "archive_path")


def status(cat: Catalog, config: Config, daemon: dict | None) -> dict[str, Any]:
    counts = {f"{kind}_{state}": n for (kind, state), n in RequestQueue(cat).counts().items()}
    states = {
        state: {"files": n, "bytes": nbytes}
        for state, (n, nbytes) in FileClerk(cat).by_state().items()
    }
    vols, total, free = reports.volume_counts(cat)
    cached = sum(states.get(s, {}).get("bytes", 0) for s in ("dirty", "archived"))
    return {
        "archive": str(config.archive),
        "name": config.name,
        "daemon": daemon,
        "mounted_on": daemon.get("mountpoint") if daemon else None,
        "drives": drives(cat, daemon),
        "workers": workers(daemon),
        "queue": counts,
        "files": states,
        "cache": {
            "used": daemon["cache"]["used"] if daemon else cached,
            "limit": config.cache.size,
        },
        "volumes": {
            "by_state": vols,
            "capacity": total,
            "free": free,
            "deleted": VolumeClerk(cat).reclaimable(),
        },
    }


# -- printing -------------------------------------------------------------------------------


def _cell(col: str, v: Any) -> Text:
    """A table cell: plain text (names are not rich markup), never a raw control
    character or a byte that is not UTF-8 (`backend.names.printable`)."""
    if v is None:
        return Text("")
    if col in ("used", "deleted", "capacity", "size") and isinstance(v, int):
        return Text(format_size(v))
    return Text(printable(str(v)))


def print_table(console: Console, title: str, rows: list[dict], columns: list[str]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_cell(c, r.get(c)) for c in columns))
    console.print(t)


def print_info(console: Console, info: dict) -> None:
    t = Table(
        show_header=False, title=Text(printable(info["path"])), title_justify="left", box=None
    )
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in info.items():
        if k == "copies":
            v = "\n".join(c["location"] for c in v) or "(none yet)"
        elif k == "size":
            v = f"{v} ({format_size(v)})"
        if v is not None and k != "path" and not k.endswith("_b64"):
            t.add_row(k, Text(printable(str(v))))
    console.print(t)


def print_status(console: Console, st: dict) -> None:
    d = st["daemon"]
    stale = st.get("stale_mounts") or []
    where = [f"mounted on {st['mounted_on']} (daemon pid {d['pid']})"] if d else []
    where += [f"stale mount on {m} (daemon gone): reelfs umount {m} cleans it up" for m in stale]
    console.print(f"{st['name']} at {st['archive']}: {'; '.join(where) or 'not mounted'}")
    c = st["cache"]
    console.print(
        f"cache: {format_size(c['used'])} of {format_size(c['limit'])} "
        f"({100 * c['used'] / max(1, c['limit']):.0f}%)"
    )
    files = st["files"]
    console.print(
        "files: "
        + ", ".join(
            f"{v['files']} {k} ({format_size(v['bytes'])})" for k, v in sorted(files.items())
        )
        if files
        else "files: none"
    )
    q = st["queue"]
    console.print(
        "queue: "
        + (", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(q.items())) or "empty")
    )
    v = st["volumes"]
    console.print(
        "volumes: "
        + ", ".join(f"{n} {s}" for s, n in sorted(v["by_state"].items()))
        + f"; {format_size(v['free'])} free of {format_size(v['capacity'])}"
        + f", {format_size(v['deleted'])} held by deleted copies (reclaimable by repack)"
    )
    print_table(console, "Drives", st["drives"], drive_columns(st["drives"]))
    if st.get("workers"):
        print_table(console, "Workers", st["workers"], WORKER_COLUMNS)


def drive_columns(rows: list[dict]) -> list[str]:
    """The drive table's columns: with the movers' liveness when the daemon runs."""
    if any("mover" in r for r in rows):
        return [*DRIVE_COLUMNS, "mover", "restarts", "last_error"]
    return DRIVE_COLUMNS


def print_summary(console: Console, op: str, s: dict) -> None:
    verb = {
        "flush": "queued for tape now",
        "release": "released",
        "recall": "recall queued",
        "pin": "pinned",
        "unpin": "unpinned",
    }.get(op, op)
    console.print(f"{s['done']} of {s['files']} file(s) {verb} ({format_size(s['bytes'])})")
    for why, n in sorted(s.get("skipped", {}).items()):
        console.print(f"  {n} skipped: {why}")
    for e in s.get("errors", []):
        console.print(f"  error: {printable(str(e))}")
    if s.get("note"):
        console.print(f"  {s['note']}")


def stall_reason(cat: Catalog) -> str | None:
    return reports.latest_event(cat, ("stalled", "drive_down"), time.time_ns() - int(600e9))


#: how often a wait asks why it is stuck (a diagnosis reads several tables)
STALL_EVERY = 1.0


def wait_progress(
    poll: Callable[[], tuple[int, bool]],
    *,
    total: int,
    what: str,
    console: Console,
    timeout: float | None,
    stalled: Callable[[], str | None] | None = None,
    gone: Callable[[], str | None] | None = None,
    quiet: bool = False,
) -> None:
    """Show a progress bar until `poll()` says done; raises WaitTimeout at the deadline
    (with the last reason `stalled()` gave) or as soon as `gone()` says the work cannot
    go on."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = [TextColumn("{task.description}"), BarColumn()]
    columns += (
        [DownloadColumn(), TransferSpeedColumn()] if total > 10_000 else [MofNCompleteColumn()]
    )
    columns.append(TimeElapsedColumn())
    with Progress(
        *columns, console=console, disable=quiet or not console.is_terminal, transient=False
    ) as bar:
        task = bar.add_task(what, total=total)
        last_note = note = None
        asked: float | None = None  # when stalled() was last asked (None: never)
        while True:
            done, finished = poll()
            bar.update(task, completed=done)
            if finished:
                bar.update(task, completed=total)
                return
            stopped = gone() if gone is not None else None
            if stopped:
                raise WaitTimeout(stopped)
            now = time.monotonic()
            if stalled is not None and (asked is None or now - asked >= STALL_EVERY):
                asked = now
                note = stalled()
                if note and note != last_note:
                    console.print(f"waiting: {note}", style="yellow")
                last_note = note or last_note
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(
                    f"{what}: not done after {timeout:.0f}s" + (f": {note}" if note else "")
                )
            time.sleep(0.2)
