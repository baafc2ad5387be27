"""`reelfs library ...`: the operator's commands for the tape library.

inventory, import (mail slots -> storage slots), export VOLUME (to a mail slot) and
clean DRIVE. Through the archive daemon when it runs; directly on the library, holding
the archive lock, when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from backend.admin.control import DaemonNotRunning, call
from backend.config import parse_size
from backend.daemon.archive import lock_archive
from backend.library import cleaning
from backend.library import operations as library_ops
from drivers.library import open_library

COLUMNS = ["address", "type", "full", "barcode", "source", "volume_state", "family", "identifier"]


def _offline(config: Any, cat: Any, a: argparse.Namespace) -> dict[str, Any]:
    fd = lock_archive(config)
    try:
        if a.action == "clean":
            cleaning.mark_needed(cat, a.target, "requested by the operator")
            return {
                "drive": a.target,
                "queued": True,
                "note": "the drive is cleaned when the archive is next mounted",
            }
        lib = open_library(config.library.spec, config.archive)
        try:
            if a.action == "inventory":
                return {"elements": library_ops.inventory(cat, lib.changer)}
            if a.action == "import":
                return library_ops.import_cartridges(
                    cat,
                    lib.changer,
                    media_type=config.library.type,
                    default_capacity=parse_size(config.raw["library"].get("default_capacity", 0))
                    or int(cat.value("SELECT COALESCE(MAX(capacity),0) FROM volumes") or 0),
                )
            previous = library_ops.mark_exporting(cat, a.target)
            try:
                return library_ops.export_volume(cat, lib.changer, a.target)
            except BaseException:
                library_ops.undo_exporting(cat, a.target, previous)
                raise
        finally:
            lib.close()
    finally:
        os.close(fd)


def cmd_library(a: argparse.Namespace) -> int:
    from mountfs import views
    from mountfs.cli.main import UsageError, open_archive, out

    if a.action in ("export", "clean") and not a.target:
        raise UsageError(
            f"reelfs library {a.action} needs a " + ("VOLUME" if a.action == "export" else "DRIVE")
        )
    config, cat = open_archive(a)
    try:
        args = {"action": a.action, "volume": a.target, "drive": a.target}
        try:
            answer = call(config.socket_path, "library", timeout=600, **args)
            answer.pop("ok", None)
        except DaemonNotRunning:
            answer = _offline(config, cat, a)
    finally:
        cat.close()
    if a.json:
        print(json.dumps(answer.get("elements", answer), default=str))
        return 0
    if a.action == "inventory":
        views.print_table(out, "Library", answer["elements"], COLUMNS)
    elif a.action == "import":
        for m in answer["moved"]:
            out.print(f"{m['barcode']}: mail slot {m['from']} -> slot {m['to']}")
        for what in ("added", "returned", "missing"):
            if answer.get(what):
                out.print(f"{what}: {', '.join(answer[what])}")
        if not answer["moved"]:
            out.print("no cartridge in the mail slots")
    elif a.action == "export":
        out.print(
            f"{answer['volume']} is in mail slot {answer['mail_slot']}; its files "
            "cannot be recalled until it is imported again"
        )
    else:
        out.print(
            f"drive {answer['drive']} will be cleaned between sessions"
            + (f" ({answer['note']})" if answer.get("note") else "")
        )
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add(
        "library", cmd_library, "the tape library: inventory, import, export VOLUME, clean DRIVE"
    )
    sp.add_argument("action", choices=["inventory", "import", "export", "clean"])
    sp.add_argument("target", nargs="?", metavar="VOLUME|DRIVE")
