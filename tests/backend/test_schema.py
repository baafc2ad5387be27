"""Catalog migrations: an older catalog is brought up to date and keeps what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from backend.catalog import schema


def test_v5_gives_existing_families_one_copy(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    try:
        db = sqlite_utils.Database(conn)
        conn.execute("BEGIN")
        for step in schema._STEPS[:4]:
            step(db)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '4')")
        conn.execute("INSERT INTO families(name, width) VALUES ('raw', 2)")
        conn.execute("COMMIT")
        schema.migrate(conn)
        assert schema.current_version(conn) == schema.SCHEMA_VERSION == 5
        assert conn.execute("SELECT name, width, copies FROM families").fetchall() == [
            ("raw", 2, 1)
        ]
        conn.execute("INSERT INTO families(name) VALUES ('new')")
        assert conn.execute("SELECT copies FROM families WHERE name='new'").fetchone() == (1,)
    finally:
        conn.close()
