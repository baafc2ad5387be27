"""Tape pools: which volumes each tape copy of a family's files goes to.

A family asks for 1 to `MAX_COPIES` tape copies of each file (`families.copies`, from
`[families.NAME] copies` or `user.reelfs.copies`). Copy 1 goes to the family's own
volumes, as it always did; copy k >= 2 to the volumes of the pool ``FAMILY#k``. A volume
belongs to one pool, so two copies of one file never share a volume, and everything the
library manager does per family (due lists, width, volume choice, drawing blanks) works
per pool unchanged: a pool is what `requests.family` and `volumes.family` hold.

``#`` cannot appear in a family name (`FAMILY_RE`), so a pool never clashes
with a family of its own.
"""

from __future__ import annotations

import re

from backend.catalog.db import Catalog

MAX_COPIES = 4
#: the most volumes of one family written at once (`width`)
MAX_WIDTH = 64
SEPARATOR = "#"

FAMILY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


def copies_wanted(cat: Catalog, family: str) -> int:
    """How many tape copies `family` keeps of each file (1 unless set)."""
    n = cat.value("SELECT copies FROM families WHERE name=?", (family,))
    return min(MAX_COPIES, max(1, int(n))) if n is not None else 1
