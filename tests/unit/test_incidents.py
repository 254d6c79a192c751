"""The incident store on SQLite and on the local PostgreSQL (a throwaway database per test)."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from waops.errors import UsageError
from waops.incidents import SCHEMA_VERSION, IncidentStore, StoreError, connect, default_store, is_dsn

PG_ADMIN = os.environ.get("WAOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


def _pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no local PostgreSQL: {exc}")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    admin = _pg_admin()
    name = f"waops_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state" / "incidents.db")
    return request.getfixturevalue("pg_dsn")


@pytest.fixture
def store(store_url: str) -> Iterator[IncidentStore]:
    with connect(store_url) as s:
        yield s


def test_open_step_close_get(store: IncidentStore) -> None:
    iid = store.open(
        host="lab-1", bot="shop", cause="corrupt_keys", code=500, started_at=T0,
        evidence=["Session error:Error: Bad MAC", {"restarts": 3}], detected_at=T0 + timedelta(minutes=2),
    )  # fmt: skip
    store.add_step(iid, name="prune_keys", started_at=T0 + timedelta(minutes=3),
                   ended_at=T0 + timedelta(minutes=4), result="ok", detail="dropped 12 sessions")  # fmt: skip
    store.add_step(iid, name="verify", started_at=T0 + timedelta(minutes=4), ended_at=None, result="failed")
    store.add_human_wait(iid, 30)
    store.add_human_wait(iid, 12.5)
    inc = store.get(iid)
    assert inc is not None and inc.outcome is None and inc.resolved_at is None and inc.mttr_s is None
    assert inc.human_wait_s == 42.5

    store.close(iid, "rolled_back", T0 + timedelta(minutes=10))
    inc = store.get(iid)
    assert inc is not None
    assert (inc.host, inc.bot, inc.cause, inc.code, inc.outcome) == (
        "lab-1",
        "shop",
        "corrupt_keys",
        500,
        "rolled_back",
    )
    assert inc.started_at == T0 and inc.detected_at == T0 + timedelta(minutes=2)
    assert inc.started_at.tzinfo is not None
    assert inc.evidence == ["Session error:Error: Bad MAC", {"restarts": 3}]
    assert [(s.name, s.result) for s in inc.steps] == [("prune_keys", "ok"), ("verify", "failed")]
    assert inc.steps[0].detail == "dropped 12 sessions" and inc.steps[1].ended_at is None
    assert inc.mttr_s == 600 and inc.mttr_excl_human_s == 557.5
    doc = inc.to_dict()
    assert doc["started_at"] == "2026-01-10T03:00:00+00:00" and doc["mttr_s"] == 600


def test_outcomes_without_repair_have_no_mttr(store: IncidentStore) -> None:
    iid = store.open(host="lab-1", bot="shop", cause="banned", code=403, started_at=T0)
    store.close(iid, "needs_human")
    inc = store.get(iid)
    assert inc is not None and inc.outcome == "needs_human" and inc.resolved_at is None and inc.mttr_s is None
    with pytest.raises(UsageError):
        store.close(iid, "fixed-ish")


def test_resolved_defaults_to_now(store: IncidentStore) -> None:
    iid = store.open(host="h", bot="b", cause="process_down", code=None, started_at=T0)
    before = datetime.now(UTC)
    store.close(iid, "resolved", human_wait_s=0)
    inc = store.get(iid)
    assert inc is not None and inc.resolved_at is not None
    assert before - timedelta(seconds=1) <= inc.resolved_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_unknown_incident(store: IncidentStore) -> None:
    assert store.get(999) is None
    with pytest.raises(StoreError):
        store.add_step(999, name="x", started_at=T0, ended_at=None, result="ok")
    with pytest.raises(StoreError):
        store.close(999, "failed")


def test_list_filters_newest_first(store: IncidentStore) -> None:
    ids = {}
    for n, (bot, cause) in enumerate([("shop", "network"), ("news", "network"), ("shop", "logged_out")]):
        ids[(bot, cause)] = store.open(host="lab-1", bot=bot, cause=cause, code=None,
                                       started_at=T0 + timedelta(hours=n))  # fmt: skip
    store.close(ids[("shop", "network")], "resolved", T0 + timedelta(minutes=5))
    assert [i.bot for i in store.list()] == ["shop", "news", "shop"]
    assert [i.cause for i in store.list(bot="shop")] == ["logged_out", "network"]
    assert [i.bot for i in store.list(cause="network")] == ["news", "shop"]
    assert [i.id for i in store.list(outcome="resolved")] == [ids[("shop", "network")]]
    assert len(store.list(open_only=True)) == 2
    assert [i.bot for i in store.list(since=T0 + timedelta(minutes=30))] == ["shop", "news"]
    assert [i.bot for i in store.list(until=T0 + timedelta(minutes=30))] == ["shop"]
    assert len(store.list(limit=1)) == 1
    assert store.list(host="nowhere") == []
    # a value that would break string-built SQL is just a value
    assert store.list(bot="x' OR '1'='1") == []


def test_naive_times_are_refused(store: IncidentStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.open(host="h", bot="b", cause="network", code=None, started_at=datetime(2026, 1, 1))


def test_migrations_are_idempotent(store_url: str) -> None:
    for _ in range(3):
        with connect(store_url) as s:
            assert s.migrate() == SCHEMA_VERSION
            assert s.schema_version() == SCHEMA_VERSION
    with connect(store_url) as s:
        iid = s.open(host="h", bot="b", cause="network", code=408, started_at=T0)
    with connect(store_url) as s:  # data survives a reopen
        assert s.get(iid) is not None
        assert s.list()[0].code == 408


def test_partial_migration_is_completed(tmp_path: Path) -> None:
    """A store left at version 1 (an older waops) is brought to the current version."""
    from waops import incidents

    db = tmp_path / "old.db"
    old = incidents.MIGRATIONS[:1]
    real = incidents.MIGRATIONS
    try:
        incidents.MIGRATIONS = old  # type: ignore[misc]
        with connect(db) as s:
            pass
    finally:
        incidents.MIGRATIONS = real  # type: ignore[misc]
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT MAX(version) FROM waops_schema").fetchone()[0] == 1
    raw.close()
    with connect(db) as s:
        assert s.schema_version() == SCHEMA_VERSION
    raw = sqlite3.connect(db)
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "incidents_cause_started" in indexes
    raw.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with connect(db):
        pass
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO waops_schema (version, applied_at) VALUES (?, 'x')", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        connect(db)


def test_sqlite_default_location_and_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("WAOPS_STORE", raising=False)
    assert default_store() == tmp_path / "xdg" / "waops" / "incidents.db"
    with connect() as s:
        assert s.where == str(default_store())
    assert default_store().stat().st_mode & 0o777 == 0o600
    assert default_store().parent.stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("WAOPS_STORE", str(tmp_path / "env.db"))
    with connect() as s:
        assert s.where == str(tmp_path / "env.db")


def test_dsn_detection() -> None:
    assert is_dsn("postgresql://u@db.example.com/waops")
    assert is_dsn("postgres://db.example.com/waops")
    assert is_dsn("host=db.example.com dbname=waops")
    assert not is_dsn("/var/lib/waops/incidents.db")
    assert not is_dsn("incidents.db")


def test_postgres_errors_hide_the_password() -> None:
    _pg_admin().close()  # skip when there is no local server at all
    with pytest.raises(StoreError) as err:
        connect("postgresql://postgres:s3cret-pw@127.0.0.1:5432/waops_no_such_db_x")
    assert "s3cret-pw" not in str(err.value)
    assert "127.0.0.1" in str(err.value)
