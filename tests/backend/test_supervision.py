"""The supervision of workers (backend.supervision): the restart policy, a busy catalog
waited for with one event, crashes restarted then given up with the reason."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from backend.catalog.db import open_catalog
from backend.supervision import Health, RestartPolicy, Supervisor, catalog_busy
from tests.waiting import wait_for


def test_policy_allows_n_restarts_in_the_window_then_gives_up() -> None:
    p = RestartPolicy(max_restarts=3, window=600.0)
    assert [p.crashed(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert p.crashed(3.0) is False
    assert p.describe() == "failed 4 times in 10 min"


def test_policy_forgets_crashes_older_than_the_window() -> None:
    p = RestartPolicy(max_restarts=1, window=10.0)
    assert p.crashed(100.0)
    assert p.crashed(200.0)  # the first is out of the window: one recent crash
    assert not p.crashed(201.0)


def test_catalog_busy_is_told_from_other_errors() -> None:
    assert catalog_busy(sqlite3.OperationalError("database is locked"))
    assert not catalog_busy(sqlite3.OperationalError("no such table: x"))
    assert not catalog_busy(RuntimeError("database is locked"))


@pytest.fixture
def catalog(tmp_path: Path):
    cat = open_catalog(tmp_path / "catalog.db", create=True, any_thread=True)
    cat.conn.execute("PRAGMA busy_timeout = 100")  # a busy lock shows at once
    yield cat
    cat.close()


def _events(cat, kind: str) -> list[str]:
    return [r[0] for r in cat.all("SELECT message FROM events WHERE kind=?", (kind,))]


def test_a_crash_restarts_then_gives_up_with_the_reason(catalog) -> None:
    h = Health("w", "test")
    runs: list[str] = []
    given: list[str] = []

    def body() -> None:
        runs.append("run")
        raise ValueError(f"boom {runs.count('run')}")

    sup = Supervisor(h, cat=lambda: catalog, stopping=lambda: False)
    sup.run(body, restart=lambda e: runs.append("restart"), give_up=given.append)
    assert runs.count("run") == 4 and runs.count("restart") == 3
    assert given == ["failed 4 times in 10 min: ValueError: boom 4"]
    assert h.restarts == 3 and not h.alive and h.state == "gave up"
    assert h.last_error == "ValueError: boom 4"
    assert len(_events(catalog, "worker_crashed")) == 3
    assert len(_events(catalog, "worker_gave_up")) == 1


def test_a_busy_catalog_pauses_the_worker_and_resumes_it(catalog, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock
    h = Health("w", "test")
    done = threading.Event()
    resumed: list[bool] = []

    def body() -> None:
        with catalog.tx():
            catalog.execute("UPDATE meta SET value = value WHERE key='schema_version'")
        done.set()

    sup = Supervisor(h, cat=lambda: catalog, stopping=lambda: False)
    t = threading.Thread(
        target=sup.run, args=(body,), kwargs={"resume": lambda: resumed.append(True)}
    )
    t.start()
    wait_for(lambda: h.state == "paused: catalog busy", timeout=30, what="the worker paused")
    assert h.alive and not done.is_set()
    other.rollback()  # the lock is released
    wait_for(done.is_set, timeout=60, what="the worker resumed its work")
    t.join(30)
    assert resumed == [True] and h.restarts == 0 and h.busy_waits == 1
    (msg,) = _events(catalog, "catalog_busy")  # one event for the whole wait
    assert "paused" in msg and "resumed" in msg
    other.close()
