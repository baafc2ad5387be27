"""What every `reelfs` command shares: the consoles, the exit codes, the usage error,
and finding the archive (and a catalog connection) a command is about."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from backend import config as cfgmod
from mountfs import locate

EXIT_FAIL = 1
EXIT_USAGE = 2

# markup off: paths and messages may contain [brackets] that are not rich markup
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class UsageError(Exception):
    """The command line asks for something that cannot be (exit code 2)."""


def open_archive(a: argparse.Namespace, paths: Sequence[str] = ()) -> tuple[cfgmod.Config, Any]:
    """The configuration and a catalog connection of the archive a command is about."""
    archive = locate.find_archive(a.archive, list(paths))
    config = locate.load_config(archive)
    return config, locate.catalog(config)


def config_of(a: argparse.Namespace) -> cfgmod.Config:
    """The configuration of the archive a command is about, without opening its catalog."""
    return locate.load_config(locate.find_archive(a.archive))
