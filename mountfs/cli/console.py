"""What every `reelfs` command shares: the consoles, the exit codes, the usage error,
and finding the archive (and a catalog connection) a command is about."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence

from rich.console import Console

from backend import config as cfgmod
from backend.catalog.db import Catalog
from mountfs import locate

EXIT_FAIL = 1
EXIT_USAGE = 2

# markup off: paths and messages may contain [brackets] that are not rich markup
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class UsageError(Exception):
    """The command line asks for something that cannot be (exit code 2)."""


@contextlib.contextmanager
def archive_catalog(
    a: argparse.Namespace, paths: Sequence[str] = ()
) -> Iterator[tuple[cfgmod.Config, Catalog]]:
    """The configuration and a catalog connection of the archive a command is about, for
    the duration of a block."""
    config = locate.load_config(locate.find_archive(a.archive, list(paths)))
    cat = locate.catalog(config)
    try:
        yield config, cat
    finally:
        cat.close()


def config_of(a: argparse.Namespace) -> cfgmod.Config:
    """The configuration of the archive a command is about, without opening its catalog."""
    return locate.load_config(locate.find_archive(a.archive))
