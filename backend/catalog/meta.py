"""The catalog's own facts: which archive it belongs to, and whether the last daemon
stopped cleanly (the clean-stop marker that lets a start skip the crash-only checks)."""

from __future__ import annotations

from backend.catalog.db import Catalog

ARCHIVE_ID = "archive_id"
CLEAN_STOP = "clean_stop"


def archive_id(cat: Catalog) -> str | None:
    """The id of the archive this catalog was made for (None in a catalog that predates it)."""
    return cat.value("SELECT value FROM meta WHERE key=?", (ARCHIVE_ID,))


def set_archive_id(cat: Catalog, value: str) -> None:
    with cat.tx():
        cat.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (ARCHIVE_ID, value))


def take_clean_stop(cat: Catalog) -> bool:
    """Whether the last daemon stopped cleanly; marks the archive as running from now."""
    with cat.tx():
        clean = cat.value("SELECT value FROM meta WHERE key=?", (CLEAN_STOP,)) == "1"
        cat.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '0')", (CLEAN_STOP,))
    return clean


def mark_clean_stop(cat: Catalog) -> None:
    with cat.tx():
        cat.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (CLEAN_STOP,))
