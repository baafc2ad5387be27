"""`reelfs library inventory|reconcile|import|export VOLUME|clean DRIVE`: the tape library
(backend.admin.library, in the daemon or on the unmounted archive)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from backend.admin import registry
from mountfs import views
from mountfs.cli.console import UsageError, config_of, out

COLUMNS = ["address", "type", "full", "barcode", "source", "volume_state", "family", "identifier"]


def cmd_library(a: argparse.Namespace) -> int:
    if a.action in ("export", "clean") and not a.target:
        raise UsageError(
            f"reelfs library {a.action} needs a " + ("VOLUME" if a.action == "export" else "DRIVE")
        )
    args: dict[str, Any] = {}
    if a.action == "export":
        args["volume"] = a.target
    elif a.action == "clean":
        args["drive"] = a.target
    answer = registry.run(config_of(a), f"library.{a.action}", **args)
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
    elif a.action == "reconcile":
        said = False
        for what in ("added", "returned", "missing", "unstuck", "stuck"):
            if answer.get(what):
                out.print(f"{what}: {', '.join(answer[what])}")
                said = True
        if not said:
            out.print("the catalog agrees with the library")
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
        "library",
        cmd_library,
        "the tape library: inventory, reconcile, import, export VOLUME, clean DRIVE",
    )
    sp.add_argument("action", choices=["inventory", "reconcile", "import", "export", "clean"])
    sp.add_argument("target", nargs="?", metavar="VOLUME|DRIVE")
