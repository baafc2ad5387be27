"""File families: the policy a directory hands down to the files created under it.

A *file family* (Enstore's term) names the set of volumes a file's data goes to. It is set
on a directory with `user.reelfs.file_family` and inherited, like `user.reelfs.width`,
`user.reelfs.copies` and `user.reelfs.storage_group`, by every entry created below it
(`INHERITED_XATTRS`, copied by `backend.catalog.namespace` at create). A file takes the
family its directory had when its data was last written (`bitfiles.family`).

A family's own settings live in the `families` table: `width` (how many of its volumes
are written at once) and `copies` (tape copies of each file, 1 to `MAX_COPIES`). They
come from `[families.NAME]` in `reelfs.toml` (which win at every start,
`sync_from_config`) or from setting the xattrs on any directory of the family
(`set_setting`).

Tape pools: copy 1 of a family's files goes to the family's own volumes; copy k >= 2 to
the volumes of the pool ``FAMILY#k``. A volume belongs to one pool, so two copies of one
file never share a volume, and everything the library manager does per family (due
lists, width, volume choice, drawing blanks) works per pool unchanged: a pool is what
`requests.family` and `volumes.family` hold. ``#`` cannot appear in a family name
(`FAMILY_RE`), so a pool never clashes with a family of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from backend.catalog.db import Catalog

DEFAULT_FAMILY = "default"
MAX_COPIES = 4
#: the most volumes of one family written at once (`width`)
MAX_WIDTH = 64
SEPARATOR = "#"

FAMILY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

FAMILY_XATTR = b"user.reelfs.file_family"
WIDTH_XATTR = b"user.reelfs.width"
COPIES_XATTR = b"user.reelfs.copies"
GROUP_XATTR = b"user.reelfs.storage_group"
#: directory policy carried down to every new entry (pnfs-style tags)
INHERITED_XATTRS = (FAMILY_XATTR, WIDTH_XATTR, COPIES_XATTR, GROUP_XATTR)
#: the family's own settings, set through any directory of the family: (column, highest)
SETTINGS = {WIDTH_XATTR: ("width", MAX_WIDTH), COPIES_XATTR: ("copies", MAX_COPIES)}


def pool_name(family: str, copy: int) -> str:
    """The pool copy number `copy` of `family`'s files is written to."""
    return family if copy == 1 else f"{family}{SEPARATOR}{copy}"


def split_pool(pool: str) -> tuple[str, int]:
    """(family, copy number) of a pool name; a plain family name is its copy 1."""
    family, sep, copy = pool.rpartition(SEPARATOR)
    if sep and family and copy.isdigit():
        return family, int(copy)
    return pool, 1


def family_of_pool(pool: str) -> str:
    return split_pool(pool)[0]


def of_entry(xattr: Callable[[bytes], bytes | None]) -> tuple[str, str | None]:
    """(family, storage group) of an entry, given a lookup of its stored xattrs."""
    fam = xattr(FAMILY_XATTR)
    grp = xattr(GROUP_XATTR)
    return (fam.decode() if fam else DEFAULT_FAMILY, grp.decode() if grp else None)


def copies_wanted(cat: Catalog, family: str) -> int:
    """How many tape copies `family` keeps of each file (1 unless set)."""
    n = cat.value("SELECT copies FROM families WHERE name=?", (family,))
    return min(MAX_COPIES, max(1, int(n))) if n is not None else 1


def width(cat: Catalog, pool: str, configured: Mapping[str, int]) -> int:
    """How many volumes of a pool are written at once: its family's width (each copy of
    a family has a pool of its own)."""
    family = family_of_pool(pool)
    w = cat.value("SELECT width FROM families WHERE name=?", (family,))
    if w is None:
        w = configured.get(family, 1)
    return max(1, int(w))


def set_setting(cat: Catalog, family: str, xattr: bytes, value: int) -> None:
    """A family setting (`width` or `copies`) set through a directory's xattr."""
    column = SETTINGS[xattr][0]  # a fixed column name, never user input
    with cat.tx():
        cat.execute(
            f"INSERT INTO families(name, {column}) VALUES (?,?) "
            f"ON CONFLICT(name) DO UPDATE SET {column}=excluded.{column}",
            (family, value),
        )


def sync_from_config(cat: Catalog, widths: Mapping[str, int], copies: Mapping[str, int]) -> None:
    """`[families.NAME]` tables win at start: their width, and their number of tape
    copies when they give one (else what `user.reelfs.copies` set stays)."""
    with cat.tx():
        for fam, w in widths.items():
            cat.execute(
                "INSERT INTO families(name, width) VALUES (?,?) "
                "ON CONFLICT(name) DO UPDATE SET width=excluded.width",
                (fam, w),
            )
        for fam, n in copies.items():
            cat.execute(
                "INSERT INTO families(name, copies) VALUES (?,?) "
                "ON CONFLICT(name) DO UPDATE SET copies=excluded.copies",
                (fam, n),
            )
