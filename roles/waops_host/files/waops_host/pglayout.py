"""PostgreSQL table layouts: which rows of which table are one bot's auth state, as SQL text.

A managed bot's rows live in the session table of docs/CONTRACTS.md (session, key, value, updated_at),
scoped by session = the bot. An adopted bot's table is its own: key and value columns named in its config,
and its rows are the whole table (`table`), those with a scope column's value (`column`), or those whose
key starts with a prefix (`prefix`, stripped in backups so keys read as Baileys names them). Every name
and value reaches SQL as a psql variable (:"kc" :"vc" :"sc" identifiers, :'s' :'p' literals).
"""

from __future__ import annotations

import re
from typing import Any

from .base import KEY_TYPES, ConfigError

PG_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def pg_rows(pg: dict[str, Any]) -> dict[str, str]:
    rows = pg.get("rows")
    return rows if isinstance(rows, dict) else {"kind": "column", "column": "session", "value": str(pg["session"])}


def pg_check_layout(pg: dict[str, Any], path: str) -> None:
    """Refuse a table layout the SQL below cannot quote: names are identifiers, rows one of three kinds."""
    for k in ("table", "key_column", "value_column"):
        if k in pg and not PG_IDENT_RE.match(str(pg[k])):
            raise ConfigError(f"{path}: postgres.{k} must be a plain identifier")
    rows = pg_rows(pg)
    kind = rows.get("kind")
    if kind == "column":
        if not PG_IDENT_RE.match(str(rows.get("column") or "")) or not str(rows.get("value") or ""):
            raise ConfigError(f"{path}: postgres.rows column needs a column identifier and a value")
    elif kind == "prefix":
        if not str(rows.get("prefix") or ""):
            raise ConfigError(f"{path}: postgres.rows prefix must not be empty")
    elif kind != "table":
        raise ConfigError(f"{path}: postgres.rows.kind must be table, column or prefix")
    if pg.get("sslmode") not in (None, "disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise ConfigError(f"{path}: postgres.sslmode is not a libpq sslmode")


def pg_psql_vars(pg: dict[str, Any]) -> list[str]:
    rows = pg_rows(pg)
    out = ["-v", f"kc={pg.get('key_column') or 'key'}", "-v", f"vc={pg.get('value_column') or 'value'}"]
    if rows["kind"] == "column":
        out += ["-v", f"sc={rows['column']}", "-v", f"s={rows['value']}"]
    if rows["kind"] == "prefix":
        out += ["-v", f"p={rows['prefix']}"]
    return out


def pg_where(pg: dict[str, Any]) -> str:
    kind = pg_rows(pg)["kind"]
    return {"column": ":\"sc\" = :'s'", "prefix": "left(:\"kc\", length(:'p')) = :'p'", "table": "TRUE"}[kind]


def pg_key(pg: dict[str, Any]) -> str:
    """The Baileys key of a row (the prefix taken off)."""
    return "substr(:\"kc\", length(:'p') + 1)" if pg_rows(pg)["kind"] == "prefix" else ":\"kc\""


def pg_value(pg: dict[str, Any]) -> str:
    return ":\"vc\"::jsonb"  # a text column holding JSON reads the same


def pg_insert(pg: dict[str, Any], key: str, value: str) -> str:
    """INSERT of (key, value) expressions as this bot's rows."""
    kind = pg_rows(pg)["kind"]
    if kind == "column":
        return f"INSERT INTO :\"t\" (:\"sc\", :\"kc\", :\"vc\") SELECT :'s', {key}, {value}"
    k = f":'p' || ({key})" if kind == "prefix" else key
    return f"INSERT INTO :\"t\" (:\"kc\", :\"vc\") SELECT {k}, {value}"


def pg_has_updated_at(pg: dict[str, Any]) -> bool:
    """Only the managed table is known to carry updated_at (sender-key age); an adopted one need not."""
    return not pg.get("rows")


def sql_export(pg: dict[str, Any]) -> str:
    return (f"SELECT json_build_object('key', {pg_key(pg)}, 'value', {pg_value(pg)})::text FROM :\"t\" "
            f"WHERE {pg_where(pg)} ORDER BY 1;\n")


def sql_delete(pg: dict[str, Any]) -> str:
    return f"DELETE FROM :\"t\" WHERE {pg_where(pg)};\n"


def _type_case(key: str) -> str:
    # A CASE of prefix LIKEs (built from the constant KEY_TYPES, longest first) is ~20x faster than a regex.
    return f"CASE WHEN {key} = 'creds' THEN 'creds' " + " ".join(
        f"WHEN {key} LIKE '{t}-%' THEN '{t}'" for t in KEY_TYPES) + " ELSE 'other' END"


def sql_facts(pg: dict[str, Any]) -> str:
    key, where = pg_key(pg), pg_where(pg)
    return (f"SELECT {_type_case(key)} AS t, count(*) FROM :\"t\" WHERE {where} GROUP BY 1 ORDER BY 1;\n"
            f"SELECT 'CREDS', {pg_value(pg)}::text FROM :\"t\" WHERE {where} AND {key} = 'creds';\n")
