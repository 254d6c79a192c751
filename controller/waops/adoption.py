"""Adopted bots: an inventory entry that describes a bot someone already runs, instead of one waops deploys.

The one owner of the entry's shape (docs/CONTRACTS.md "Adopted bots"): the inventory reader validates
every adopted entry with `parse`, `waops adopt` proposes entries in this shape, and the roles read the
same keys (roles/waops_host/templates/bot.json.j2). An adopted bot keeps its code, service, data and pm2
dump as they are: site.yml installs only the agent, its backups, check, metrics and alerts for it.

    - name: wa-service
      adopted: true
      service: {manager: pm2, app: baileys-whatsapp-service, pm2_home: /root/.pm2, user: root}
      #        {manager: systemd, unit: whatsapp-bot.service, user: bot}
      workdir: /root/baileys-whatsapp-service        # the bot's code; a git working copy or not
      auth:
        folder: /root/.baileys_auth_info             # useMultiFileAuthState's folder (optional)
        postgres:                                    # a hand-written PostgreSQL auth state (optional)
          dsn: "{{ vault_wa_service_pg_dsn }}"       # postgresql://user:password@host:5432/db?sslmode=require
          table: baileys_auth
          key_column: key
          value_column: value
          rows: table                                # whole table | {column: session, value: x} | {prefix: "x:"}
      logs: {out: /root/.pm2/logs/baileys-whatsapp-service-out.log,
             err: /root/.pm2/logs/baileys-whatsapp-service-error.log}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from waops.errors import UsageError

MANAGERS = ("pm2", "systemd")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@-]+\.service$")
_PM2_APP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")
_KEYS = {"name", "adopted", "service", "workdir", "auth", "logs", "phone", "library_package", "library_expected",
         "backup_keep", "alerts", "home_host", "pairing", "offhost_repository", "backup_age_recipient"}
# Keys of a managed bot that make no sense on an adopted one (it is not deployed).
_MANAGED_ONLY = {"source", "entry", "keep_releases", "auth_store", "service_manager", "user", "keepalive_hours",
                 "keepalive_backup", "backup_cmd", "env"}


@dataclass(frozen=True)
class PgRows:
    """How rows belong to this bot: the whole table, a scope column with a value, or a key prefix."""

    kind: str  # "table" | "column" | "prefix"
    column: str | None = None
    value: str | None = None
    prefix: str | None = None

    def to_agent(self) -> dict[str, str]:
        if self.kind == "column":
            return {"kind": "column", "column": str(self.column), "value": str(self.value)}
        if self.kind == "prefix":
            return {"kind": "prefix", "prefix": str(self.prefix)}
        return {"kind": "table"}


@dataclass(frozen=True)
class PgAuth:
    dsn: str = field(repr=False)  # carries the password: never printed
    table: str
    key_column: str
    value_column: str
    rows: PgRows


@dataclass(frozen=True)
class Adopted:
    manager: str  # pm2 | systemd
    service_name: str  # the pm2 app or the systemd unit
    user: str  # the unix user the bot runs as (root on a runbook host)
    pm2_home: str | None
    workdir: str
    folder: str | None
    postgres: PgAuth | None
    logs: dict[str, str]

    @property
    def auth_store(self) -> str:
        return "postgres" if self.postgres else "files"


def is_adopted(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("adopted") is True


def parse(host: str, entry: dict[str, Any]) -> Adopted:
    """The adopted entry of bot `entry['name']` on `host`, or a UsageError naming the key and the fix."""
    name = entry.get("name")
    where = f"host {host}, adopted bot {name}"

    def fail(msg: str) -> UsageError:
        return UsageError(f"{where}: {msg}")

    unknown = sorted(set(entry) - _KEYS)
    managed = [k for k in unknown if k in _MANAGED_ONLY]
    if managed:
        raise fail(f"{', '.join(managed)} describe a bot waops deploys; an adopted bot is described by "
                   "service, workdir, auth and logs (remove them, or drop `adopted: true`)")
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    svc = entry.get("service")
    if not isinstance(svc, dict):
        raise fail("service is required: {manager: pm2, app: NAME, pm2_home: PATH, user: USER} "
                   "or {manager: systemd, unit: NAME.service, user: USER}")
    manager = svc.get("manager")
    if manager not in MANAGERS:
        raise fail(f"service.manager must be pm2 or systemd, not {manager!r}")
    user = str(svc.get("user") or "root")
    if not _USER.match(user):
        raise fail(f"service.user {user!r} is not a unix user name")
    pm2_home = None
    if manager == "pm2":
        app = svc.get("app")
        if not isinstance(app, str) or not _PM2_APP.match(app):
            raise fail("service.app must be the pm2 app name as `pm2 ls` shows it")
        pm2_home = _abs(fail, "service.pm2_home", svc.get("pm2_home") or ("/root/.pm2" if user == "root" else None))
        extra = sorted(set(svc) - {"manager", "app", "pm2_home", "user"})
        service_name = app
    else:
        unit = svc.get("unit")
        if not isinstance(unit, str) or not _UNIT.match(unit):
            raise fail("service.unit must be a systemd unit name ending in .service")
        extra = sorted(set(svc) - {"manager", "unit", "user"})
        service_name = unit
    if extra:
        raise fail(f"service has unknown key(s) {', '.join(extra)}")
    workdir = _abs(fail, "workdir", entry.get("workdir"))
    auth = entry.get("auth")
    if not isinstance(auth, dict) or not (auth.get("folder") or auth.get("postgres")):
        raise fail("auth needs a folder (useMultiFileAuthState's directory), a postgres table, or both")
    if set(auth) - {"folder", "postgres"}:
        raise fail(f"auth has unknown key(s) {', '.join(sorted(set(auth) - {'folder', 'postgres'}))}")
    folder = _abs(fail, "auth.folder", auth["folder"]) if auth.get("folder") else None
    pg = _pg(fail, auth["postgres"]) if auth.get("postgres") else None
    logs_raw = entry.get("logs") or {}
    if not isinstance(logs_raw, dict) or set(logs_raw) - {"out", "err"}:
        raise fail("logs is {out: PATH, err: PATH} (either may be left out)")
    logs = {k: _abs(fail, f"logs.{k}", v) for k, v in logs_raw.items() if v}
    return Adopted(manager, service_name, user, pm2_home, workdir, folder, pg, logs)


def _abs(fail: Any, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.rstrip("/") == "" or "\n" in value:
        raise fail(f"{key} must be an absolute path (got {value!r})")
    if any(part in (".", "..") for part in value.split("/")):
        raise fail(f"{key} must not contain . or .. parts")
    return value.rstrip("/") or "/"


def _pg(fail: Any, raw: Any) -> PgAuth:
    if not isinstance(raw, dict):
        raise fail("auth.postgres must be a mapping (dsn, table, key_column, value_column, rows)")
    extra = sorted(set(raw) - {"dsn", "table", "key_column", "value_column", "rows"})
    if extra:
        raise fail(f"auth.postgres has unknown key(s) {', '.join(extra)}")
    dsn = raw.get("dsn")
    if not isinstance(dsn, str) or not dsn:
        raise fail("auth.postgres.dsn is required; keep it in the vault: dsn: \"{{ vault_<bot>_pg_dsn }}\"")
    dsn_check(fail, dsn)
    table = raw.get("table") or "baileys_auth"
    if not isinstance(table, str) or not _IDENT.match(table):
        raise fail(f"auth.postgres.table {table!r} must be a plain identifier (the table of the search_path)")
    cols = {}
    for key, default in (("key_column", "key"), ("value_column", "value")):
        col = raw.get(key) or default
        if not isinstance(col, str) or not _IDENT.match(col):
            raise fail(f"auth.postgres.{key} {col!r} must be a plain identifier")
        cols[key] = col
    rows = _rows(fail, raw.get("rows", "table"))
    if rows.kind == "column" and rows.column in cols.values():
        raise fail("auth.postgres.rows.column must differ from the key and value columns")
    return PgAuth(dsn, table, cols["key_column"], cols["value_column"], rows)


def _rows(fail: Any, raw: Any) -> PgRows:
    if raw == "table":
        return PgRows("table")
    if isinstance(raw, dict) and set(raw) == {"column", "value"}:
        col, value = raw["column"], raw["value"]
        if not isinstance(col, str) or not _IDENT.match(col):
            raise fail(f"auth.postgres.rows.column {col!r} must be a plain identifier")
        if not isinstance(value, (str, int)) or str(value) == "":
            raise fail("auth.postgres.rows.value must be this bot's value in that column")
        return PgRows("column", column=col, value=str(value))
    if isinstance(raw, dict) and set(raw) == {"prefix"}:
        prefix = raw["prefix"]
        if not isinstance(prefix, str) or not prefix or len(prefix) > 200:
            raise fail("auth.postgres.rows.prefix must be the text in front of this bot's keys")
        return PgRows("prefix", prefix=prefix)
    raise fail("auth.postgres.rows says which rows are this bot's: `table` (one bot per table), "
               "{column: COLUMN, value: VALUE} or {prefix: TEXT}")


def dsn_check(fail: Any, dsn: str) -> None:
    """A postgresql:// URL with host, user and database; templated values (vault) are checked later."""
    if "{{" in dsn:
        return
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise fail("auth.postgres.dsn must be a postgresql://user:password@host:port/db URL")
    if not parts.hostname or not parts.username or not parts.path.strip("/"):
        raise fail("auth.postgres.dsn needs a user, a host and a database name")
    mode = (parse_qs(parts.query).get("sslmode") or [""])[0]
    if mode and mode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise fail(f"auth.postgres.dsn has an unknown sslmode {mode!r}")
