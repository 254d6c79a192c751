"""The agent on an adopted bot's own PostgreSQL table: key and value columns of its own names, and its rows
being the whole table, those of a scope column's value, or those whose key starts with a prefix. Backup,
verify, facts, prune, restore and reset touch only this bot's rows; another bot's rows (in the same table
or another one) stay byte for byte as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Bot, psql

LAYOUTS: dict[str, dict[str, Any]] = {
    # the runbook's table: one bot per table, key text primary key, value jsonb
    "table": {"ddl": "CREATE TABLE {t} (k text PRIMARY KEY, v jsonb NOT NULL)", "rows": {"kind": "table"},
              "key": "{key}", "other": "CREATE TABLE other_bot (key text PRIMARY KEY, value jsonb)"},
    "column": {"ddl": "CREATE TABLE {t} (tenant text, k text, v text, PRIMARY KEY (tenant, k))",
               "rows": {"kind": "column", "column": "tenant", "value": "shop"}, "key": "{key}", "other": None},
    "prefix": {"ddl": "CREATE TABLE {t} (k text PRIMARY KEY, v jsonb NOT NULL)",
               "rows": {"kind": "prefix", "prefix": "shop_1:"}, "key": "shop_1:{key}", "other": None},
}
CREDS = '{"me": {"id": "15550100001:3@s.whatsapp.net"}, "account": {"details": "x"}, "registered": true}'


def _fill(db: str, layout: str) -> None:
    lay = LAYOUTS[layout]
    psql(lay["ddl"].format(t="wa_auth"), db=db)
    k = lay["key"]
    scope = ("tenant, ", "'shop', ") if layout == "column" else ("", "")
    psql(f"INSERT INTO wa_auth ({scope[0]}k, v) VALUES ({scope[1]}'{k.format(key='creds')}', '{CREDS}')", db=db)
    psql(f"INSERT INTO wa_auth ({scope[0]}k, v) SELECT {scope[1]}'{k.format(key='pre-key-')}' || i, "
         "jsonb_build_object('id', i, 'odd', E'quote \" tab \\t é') FROM generate_series(1, 40) i", db=db)
    psql(f"INSERT INTO wa_auth ({scope[0]}k, v) VALUES ({scope[1]}'{k.format(key='session-1555.0')}', '{{}}')",
         db=db)
    # another bot: same table with another scope or prefix, or its own table
    if layout == "column":
        psql("INSERT INTO wa_auth (tenant, k, v) VALUES ('crm', 'creds', '{\"me\": {\"id\": \"crm\"}}'), "
             "('crm', 'session-9.0', '{}')", db=db)
    elif layout == "prefix":
        psql("INSERT INTO wa_auth (k, v) VALUES ('crm:creds', '{\"me\": {\"id\": \"crm\"}}'), "
             "('shop_10:creds', '{}'), ('shopx1:session-9.0', '{}')", db=db)
    else:
        psql(lay["other"], db=db)
        psql("INSERT INTO other_bot VALUES ('creds', '{\"me\": {\"id\": \"crm\"}}'), ('session-9.0', '{}')", db=db)


def _others(db: str, layout: str) -> str:
    if layout == "column":
        return psql("SELECT tenant, k, v FROM wa_auth WHERE tenant <> 'shop' ORDER BY 1, 2", db=db)
    if layout == "prefix":
        return psql("SELECT k, v FROM wa_auth WHERE k NOT LIKE 'shop\\_1:%' ORDER BY 1", db=db)
    return psql("SELECT key, value FROM other_bot ORDER BY 1", db=db)


def _mine(db: str, layout: str) -> str:
    where = {"column": "tenant = 'shop'", "prefix": "k LIKE 'shop\\_1:%'", "table": "TRUE"}[layout]
    return psql(f"SELECT k, v::jsonb FROM wa_auth WHERE {where} ORDER BY 1", db=db)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_adopted_table_layouts(bot: Bot, pgdb: str, tmp_path: Path, layout: str) -> None:
    _fill(pgdb, layout)
    passfile = tmp_path / "pgpass"
    passfile.write_text("127.0.0.1:5432:*:postgres:not-a-real-password\n")
    passfile.chmod(0o600)
    bot.write_config(adopted=True, workdir=str(tmp_path / "app"), auth_store="postgres", postgres={
        "host": "127.0.0.1", "port": 5432, "dbname": pgdb, "user": "postgres", "password_file": str(passfile),
        "sslmode": "prefer", "table": "wa_auth", "key_column": "k", "value_column": "v",
        "rows": LAYOUTS[layout]["rows"]})
    others = _others(pgdb, layout)
    mine = _mine(pgdb, layout)

    facts = bot.json("facts")["bots"][0]["auth"]["db"]
    assert facts["reachable"] and facts["rows"] == 42, facts
    assert facts["by_type"] == {"creds": 1, "pre-key": 40, "session": 1}
    assert facts["creds"]["linked"] and facts["creds"]["me_id"].startswith("15550100001")

    b = bot.backup("cron")
    assert b["ok"] and b["verified"] and b["rows"] == 42, b
    assert bot.json("verify", b["id"])["results"][0]["ok"]

    pruned = bot.json("prune-keys", "--sessions", "all")["results"][0]
    assert pruned["db_removed"]["session"] == 1
    assert _others(pgdb, layout) == others

    reset = bot.json("reset")["results"][0]
    assert reset["rows_deleted"] == 41, reset  # the session was pruned already
    assert _mine(pgdb, layout) == ""
    assert _others(pgdb, layout) == others

    restored = bot.json("restore", b["id"])["results"][0]
    assert restored["rows"] == 42
    assert _mine(pgdb, layout) == mine  # the same keys (prefix put back) and values
    assert _others(pgdb, layout) == others


def test_bad_layout_is_refused(bot: Bot, tmp_path: Path) -> None:
    bot.write_config(auth_store="postgres", postgres={
        "host": "127.0.0.1", "dbname": "x", "user": "u", "table": "wa_auth", "key_column": 'k"; DROP',
        "rows": {"kind": "table"}})
    p = bot.run("facts")
    assert p.returncode != 0 and "key_column must be a plain identifier" in p.stderr
