"""`reelfs drive up|down DRIVE [--reason TEXT]` (backend.admin.drives)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from backend.admin import registry
from mountfs.cli.console import config_of, out


def cmd_drive(a: argparse.Namespace) -> int:
    answer = registry.run(config_of(a), "drive", name=a.name, state=a.state, reason=a.reason)
    if a.json:
        print(json.dumps(answer))
    else:
        out.print(f"drive {answer['drive']} is {answer['state']}")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("drive", cmd_drive, "take a drive out of service, or put it back")
    sp.add_argument("state", choices=["up", "down"])
    sp.add_argument("name", metavar="DRIVE")
    sp.add_argument("--reason", default="")
