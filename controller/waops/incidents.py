"""Incident store (contract 6): SQLite by default, PostgreSQL (psycopg) when the store is a DSN.

One schema, one list of ordered migrations, applied under a lock and recorded in `waops_schema`, so
opening a store twice (or from two processes) is harmless. All SQL is parameterised; the few
differences between the two databases (id column, JSON and timestamp types, placeholders) are spelled
out in `_Dialect`. Times are timezone-aware UTC datetimes in Python; SQLite keeps them as ISO 8601
text in one fixed format so that text order is time order.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from waops.errors import UsageError, WaopsError
from waops.locking import state_dir
from waops.model import OUTCOMES, StepRecord

# Outcomes where the bot works again, so resolved_at - started_at is a repair time.
REPAIRED: tuple[str, ...] = ("resolved", "rolled_back")

# Ordered migrations. Never edit a released one: append a new version.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE incidents (
                id {pk},
                host TEXT NOT NULL,
                bot TEXT NOT NULL,
                cause TEXT NOT NULL,
                code INTEGER,
                started_at {ts} NOT NULL,
                detected_at {ts} NOT NULL,
                resolved_at {ts},
                outcome TEXT CHECK (outcome IN ('resolved', 'rolled_back', 'needs_human', 'failed')),
                human_wait_s DOUBLE PRECISION NOT NULL DEFAULT 0,
                evidence {json} NOT NULL
            )""",
            """CREATE TABLE incident_steps (
                id {pk},
                incident_id {ref} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                started_at {ts} NOT NULL,
                ended_at {ts},
                result TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
        ),
    ),
    (
        2,
        (
            "CREATE INDEX incidents_cause_started ON incidents (cause, started_at)",
            "CREATE INDEX incidents_host_bot ON incidents (host, bot)",
            "CREATE INDEX incident_steps_incident ON incident_steps (incident_id)",
        ),
    ),
    # Who started the repair: an operator (waops recover, a playbook run by hand) or nobody (auto: the
    # Event-Driven Ansible rulebook). Incidents from before the column were all operators'.
    (
        3,
        ("ALTER TABLE incidents ADD COLUMN trigger TEXT NOT NULL DEFAULT 'operator'"
         " CHECK (trigger IN ('operator', 'auto'))",),
    ),
)
TRIGGERS: tuple[str, ...] = ("operator", "auto")
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(WaopsError):
    pass


@dataclass(frozen=True)
class Incident:
    id: int
    host: str
    bot: str
    cause: str
    code: int | None
    started_at: datetime
    detected_at: datetime
    resolved_at: datetime | None
    outcome: str | None  # None while the incident is open
    human_wait_s: float
    evidence: Any
    steps: tuple[StepRecord, ...] = field(default=())
    trigger: str = "operator"

    @property
    def mttr_s(self) -> float | None:
        """Repair time: resolved_at - started_at, for incidents where the bot works again."""
        if self.outcome not in REPAIRED or self.resolved_at is None:
            return None
        return (self.resolved_at - self.started_at).total_seconds()

    @property
    def mttr_excl_human_s(self) -> float | None:
        t = self.mttr_s
        return None if t is None else max(0.0, t - self.human_wait_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "host": self.host, "bot": self.bot, "cause": self.cause, "code": self.code,
            "started_at": _iso(self.started_at), "detected_at": _iso(self.detected_at),
            "resolved_at": _iso(self.resolved_at), "outcome": self.outcome,
            "human_wait_s": self.human_wait_s, "mttr_s": self.mttr_s,
            "mttr_excl_human_s": self.mttr_excl_human_s, "evidence": self.evidence,
            "trigger": self.trigger, "steps": [s.to_dict() for s in self.steps],
        }  # fmt: skip


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("naive datetime: incident times must carry a timezone")
    return t.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


# --- dialects ------------------------------------------------------------------------------------


class _Dialect:
    name = "sqlite"
    types: ClassVar[dict[str, str]] = {
        "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "ref": "INTEGER",
        "ts": "TEXT",
        "json": "TEXT",
    }

    def sql(self, text: str) -> str:
        return text

    def ts_in(self, t: datetime | None) -> Any:
        # Fixed width, always with microseconds and +00:00, so string order is time order.
        return None if t is None else _utc(t).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def ts_out(self, v: Any) -> datetime | None:
        return None if v is None else datetime.fromisoformat(v)

    def json_in(self, v: Any) -> Any:
        return json.dumps(v)

    def json_out(self, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v


class _Postgres(_Dialect):
    name = "postgresql"
    types: ClassVar[dict[str, str]] = {
        "pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "ref": "BIGINT",
        "ts": "TIMESTAMPTZ",
        "json": "JSONB",
    }

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")  # no literal '?' appears in this module's SQL

    def ts_in(self, t: datetime | None) -> Any:
        return None if t is None else _utc(t)

    def ts_out(self, v: Any) -> datetime | None:
        return None if v is None else v.astimezone(UTC)

    def json_in(self, v: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(v)


# --- the store -----------------------------------------------------------------------------------

_INCIDENT_COLS = ("id, host, bot, cause, code, started_at, detected_at, resolved_at, outcome, human_wait_s, evidence,"
                  " trigger")


class IncidentStore:
    """Open with `connect(store)`; use as a context manager or call `close_store()`."""

    def __init__(self, conn: Any, dialect: _Dialect, where: str) -> None:
        self._conn = conn
        self._d = dialect
        self.where = where  # for messages; never includes a password

    # transactions: SQLite runs in autocommit mode with explicit BEGIN IMMEDIATE (a write lock up
    # front, so two migrators serialise); psycopg's transaction() does the same job.
    @contextmanager
    def _tx(self) -> Iterator[Any]:
        if self._d.name == "sqlite":
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        else:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._d.sql(sql), tuple(params))
        return cur

    def migrate(self) -> int:
        """Apply the migrations not applied yet; returns the schema version. Idempotent."""
        with self._tx() as cur:
            if self._d.name == "postgresql":
                # One migrator at a time per database; released at commit.
                self._exec(cur, "SELECT pg_advisory_xact_lock(7710571)")
            self._exec(
                cur,
                "CREATE TABLE IF NOT EXISTS waops_schema (version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL)"
                .format(**self._d.types),
            )  # fmt: skip
            row = self._exec(cur, "SELECT MAX(version) FROM waops_schema").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the incident store {self.where} has schema {current}, newer than this waops "
                    f"({SCHEMA_VERSION}): upgrade waops"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    self._exec(cur, statement.format(**self._d.types))
                self._exec(
                    cur, "INSERT INTO waops_schema (version, applied_at) VALUES (?, ?)",
                    (version, self._d.ts_in(now())),
                )  # fmt: skip
        return self.schema_version()

    def schema_version(self) -> int:
        with self._tx() as cur:
            return self._exec(cur, "SELECT MAX(version) FROM waops_schema").fetchone()[0] or 0

    def open(
        self,
        *,
        host: str,
        bot: str,
        cause: str,
        code: int | None,
        started_at: datetime,
        evidence: Any = (),
        detected_at: datetime | None = None,
        trigger: str = "operator",
    ) -> int:
        """Record a new incident; started_at is the first evidence of the failure (the caller's)."""
        if trigger not in TRIGGERS:
            raise UsageError(f"unknown trigger {trigger!r} (one of: {', '.join(TRIGGERS)})")
        detected = detected_at or now()
        with self._tx() as cur:
            row = self._exec(
                cur,
                "INSERT INTO incidents (host, bot, cause, code, started_at, detected_at, evidence, trigger)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (host, bot, cause, code, self._d.ts_in(started_at), self._d.ts_in(detected),
                 self._d.json_in(list(evidence) if isinstance(evidence, tuple) else evidence), trigger),
            ).fetchone()  # fmt: skip
        return int(row[0])

    def add_step(
        self,
        incident_id: int,
        *,
        name: str,
        started_at: datetime,
        ended_at: datetime | None,
        result: str,
        detail: str = "",
    ) -> None:
        with self._tx() as cur:
            self._require(cur, incident_id)
            self._exec(
                cur,
                "INSERT INTO incident_steps (incident_id, name, started_at, ended_at, result, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (incident_id, name, self._d.ts_in(started_at), self._d.ts_in(ended_at), result, detail),
            )

    def add_human_wait(self, incident_id: int, seconds: float) -> None:
        """Add time spent waiting for a person (a QR scan, a pairing code)."""
        with self._tx() as cur:
            self._require(cur, incident_id)
            self._exec(
                cur, "UPDATE incidents SET human_wait_s = human_wait_s + ? WHERE id = ?",
                (float(seconds), incident_id),
            )  # fmt: skip

    def close(
        self,
        incident_id: int,
        outcome: str,
        resolved_at: datetime | None = None,
        *,
        human_wait_s: float | None = None,
    ) -> None:
        """Close an incident. For resolved/rolled_back, resolved_at defaults to now."""
        if outcome not in OUTCOMES:
            raise UsageError(f"unknown outcome {outcome!r} (one of: {', '.join(OUTCOMES)})")
        if resolved_at is None and outcome in REPAIRED:
            resolved_at = now()
        with self._tx() as cur:
            self._require(cur, incident_id)
            self._exec(
                cur,
                "UPDATE incidents SET outcome = ?, resolved_at = ?,"
                " human_wait_s = COALESCE(?, human_wait_s) WHERE id = ?",
                (outcome, self._d.ts_in(resolved_at), human_wait_s, incident_id),
            )

    def get(self, incident_id: int) -> Incident | None:
        with self._tx() as cur:
            row = self._exec(cur, f"SELECT {_INCIDENT_COLS} FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                return None
            steps = self._steps(cur, [incident_id])
        return self._incident(row, steps.get(incident_id, ()))

    def list(
        self,
        *,
        host: str | None = None,
        bot: str | None = None,
        cause: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        open_only: bool = False,
        limit: int | None = 100,
    ) -> list[Incident]:
        """Incidents, newest first (by started_at). `since`/`until` bound started_at."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("host", host), ("bot", bot), ("cause", cause), ("outcome", outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("started_at >= ?")
            params.append(self._d.ts_in(since))
        if until is not None:
            where.append("started_at < ?")
            params.append(self._d.ts_in(until))
        if open_only:
            where.append("outcome IS NULL")
        sql = f"SELECT {_INCIDENT_COLS} FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx() as cur:
            rows = self._exec(cur, sql, params).fetchall()
            steps = self._steps(cur, [r[0] for r in rows])
        return [self._incident(r, steps.get(r[0], ())) for r in rows]

    def _require(self, cur: Any, incident_id: int) -> None:
        if self._exec(cur, "SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone() is None:
            raise StoreError(f"no incident {incident_id} in {self.where}")

    def _steps(self, cur: Any, ids: Sequence[int]) -> dict[int, tuple[StepRecord, ...]]:
        out: dict[int, list[StepRecord]] = {}
        # Chunked IN lists keep each statement's parameter count small.
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self._exec(
                cur,
                "SELECT incident_id, name, started_at, ended_at, result, detail FROM incident_steps"
                f" WHERE incident_id IN ({marks}) ORDER BY id",
                chunk,
            ).fetchall()
            for iid, name, started, ended, result, detail in rows:
                started_at = self._d.ts_out(started)
                assert started_at is not None  # NOT NULL column
                out.setdefault(iid, []).append(StepRecord(name, started_at, self._d.ts_out(ended), result, detail))
        return {k: tuple(v) for k, v in out.items()}

    def _incident(self, row: Sequence[Any], steps: tuple[StepRecord, ...]) -> Incident:
        iid, host, bot, cause, code, started, detected, resolved, outcome, wait, evidence, trigger = row
        started_at, detected_at = self._d.ts_out(started), self._d.ts_out(detected)
        assert started_at is not None and detected_at is not None  # NOT NULL columns
        return Incident(
            int(iid), host, bot, cause, code, started_at, detected_at, self._d.ts_out(resolved),
            outcome, float(wait), self._d.json_out(evidence), steps, str(trigger),
        )  # fmt: skip

    def close_store(self) -> None:
        self._conn.close()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_store()


# --- opening a store -----------------------------------------------------------------------------


def default_store() -> Path:
    return state_dir() / "incidents.db"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_dsn(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://")) or ("dbname=" in store and os.path.sep not in store)


def connect(store: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> IncidentStore:
    """Open the store: a PostgreSQL DSN, a SQLite path, or (None) $WAOPS_STORE, then the default.

    Errors are UsageError (a store that can never work: unknown scheme, malformed DSN, a directory)
    or StoreError (cannot open or read it now), one line each, and never carry a password."""
    where = str(store) if store is not None else os.environ.get("WAOPS_STORE") or str(default_store())
    scheme = _SCHEME.match(where)
    if scheme and not is_dsn(where):
        # Never a SQLite file named after a URL (its password would end up in a file name).
        raise UsageError(f"incident store: unsupported scheme {scheme.group(1)!r}: use a SQLite path or "
                         "postgresql://USER@HOST/DB")
    s = _connect_postgres(where) if is_dsn(where) else _connect_sqlite(Path(where).expanduser())
    if migrate:
        try:
            s.migrate()
        except sqlite3.DatabaseError as exc:
            s.close_store()
            raise StoreError(f"the incident store {s.where} is not a waops SQLite database: {exc}") from None
        except BaseException:
            s.close_store()
            raise
    return s


def _connect_sqlite(path: Path) -> IncidentStore:
    if path.is_dir():
        raise UsageError(f"incident store {path} is a directory: name a file, e.g. {path / 'incidents.db'}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create it 0600 before sqlite does: evidence may hold phone numbers. O_NONBLOCK: a FIFO
        # planted at the path must not hang the open; it is refused below.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o600)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        if not regular:
            raise UsageError(f"incident store {path} is not a regular file")
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")  # readers (incidents list) never block a running recover
    except OSError as exc:
        raise StoreError(f"cannot open the incident store {path}: {exc.strerror or exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the incident store {path} is not a waops SQLite database: {exc}") from None
    return IncidentStore(conn, _Dialect(), str(path))


def _connect_postgres(dsn: str) -> IncidentStore:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        # The driver's message quotes the DSN, password included: say only that it is malformed.
        raise UsageError("incident store: malformed PostgreSQL DSN (expected postgresql://USER@HOST[:PORT]/DB "
                         "or key=value pairs; the password belongs in ~/.pgpass or PGPASSWORD)") from None
    where = f"postgresql://{info.get('host', 'localhost')}/{info.get('dbname', '')}"  # no password
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        # Name the store without its password, and keep the password out of the driver's message.
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if info.get("password"):
            msg = msg.replace(str(info["password"]), "***")
        raise StoreError(f"cannot connect to the incident store {where}: {msg}") from None
    return IncidentStore(conn, _Postgres(), where)
