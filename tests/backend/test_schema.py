"""Catalog migrations: an older catalog is brought up to date and keeps what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backend.catalog import schema


def test_v5_gives_existing_families_one_copy(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    try:
        conn.execute("BEGIN")
        for step in range(1, 5):
            schema.apply(conn, step)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '4')")
        conn.execute("INSERT INTO families(name, width) VALUES ('raw', 2)")
        conn.execute("COMMIT")
        schema.migrate(conn)
        assert schema.current_version(conn) == schema.SCHEMA_VERSION == 6
        assert conn.execute("SELECT name, width, copies FROM families").fetchall() == [
            ("raw", 2, 1)
        ]
        conn.execute("INSERT INTO families(name) VALUES ('new')")
        assert conn.execute("SELECT copies FROM families WHERE name='new'").fetchone() == (1,)
    finally:
        conn.close()


def test_a_new_catalog_has_the_root_and_every_step(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    try:
        schema.migrate(conn)
        assert schema.current_version(conn) == schema.SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"inodes", "entries", "bitfiles", "changes", "replication_outbox"} <= tables
        assert conn.execute("SELECT id, nlink FROM inodes").fetchall() == [(1, 2)]
        schema.migrate(conn)  # an up-to-date catalog is left alone
        assert conn.execute("SELECT count(*) FROM inodes").fetchone() == (1,)
    finally:
        conn.close()


def test_a_catalog_from_a_newer_reelfs_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    try:
        schema.migrate(conn)
        conn.execute(
            "UPDATE meta SET value=? WHERE key='schema_version'", (str(schema.SCHEMA_VERSION + 1),)
        )
        with pytest.raises(schema.SchemaError, match="newer than this reelfs"):
            schema.migrate(conn)
    finally:
        conn.close()
