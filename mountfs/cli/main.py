"""The `reelfs` command line: the parser and the one place errors become exit codes.

Every command group is a module of this package with `register(add)`, where
`add(name, function, help) -> argparse.ArgumentParser` adds one subcommand; commands only
parse arguments, call the backend and print. Listings print rich tables, or JSON with
`--json`. Every error is one line on stderr and a non-zero exit code: 1 for a failed
operation, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from backend import config as cfgmod
from backend.admin.control import ControlError, DaemonNotRunning
from backend.catalog.db import CatalogError, is_disk_full
from backend.errors import ArchiveError
from backend.names import printable
from mountfs import views
from mountfs.cli import archive, drive, files, library, listings, serve, subscribe, tape
from mountfs.cli.console import EXIT_FAIL, EXIT_USAGE, UsageError, err

#: the command groups, in the order `reelfs --help` lists them
COMMAND_MODULES = (archive, files, listings, drive, library, serve, tape, subscribe)
#: commands that do not take --archive (they name their archive or need none)
NO_ARCHIVE_OPTION = ("init", "mount", "umount", "serve")


def build_parser() -> argparse.ArgumentParser:
    plain = argparse.ArgumentParser(add_help=False)
    plain.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[plain])
    common.add_argument(
        "--archive",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the archive directory (default: $REELFS_ARCHIVE, or the archive "
        "behind a path on a mount)",
    )
    p = argparse.ArgumentParser(
        prog="reelfs",
        description="A tape-backed archive behind an ordinary mount point.",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        parent = plain if name in NO_ARCHIVE_OPTION else common
        sp = sub.add_parser(name, help=help, description=help, parents=[parent])
        sp.set_defaults(func=fn)
        return sp

    for module in COMMAND_MODULES:
        module.register(add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    a.json = getattr(a, "json", False)
    a.archive = getattr(a, "archive", None)
    try:
        return int(a.func(a) or 0)
    except UsageError as e:
        err.print(f"reelfs: {printable(str(e))}")
        return EXIT_USAGE
    except cfgmod.ConfigError as e:
        err.print(f"reelfs: configuration: {printable(str(e))}")
        return EXIT_USAGE
    except (ArchiveError, ControlError, DaemonNotRunning, CatalogError) as e:
        err.print(f"reelfs: {printable(str(e))}")
        return EXIT_FAIL
    except views.WaitTimeout as e:
        err.print(f"reelfs: {printable(str(e))}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        err.print("reelfs: interrupted")
        return 130
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"reelfs: {printable(where + str(e.strerror or e))}")
        return EXIT_FAIL
    except Exception as e:
        if not is_disk_full(e):
            raise
        err.print(f"reelfs: the catalog's file system is full (ENOSPC): {e}; nothing was changed")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
