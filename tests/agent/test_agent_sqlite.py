"""The SQLite auth store (one database file per bot, written by the bot): facts, an online backup that
stays consistent while a writer holds the database, verify, restore, reset and prune-keys."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from agent_helpers import BOT_UID, PYTHON, Bot, give_to_bot

CREDS = {"noiseKey": {"private": {"type": "Buffer", "data": "AAEC"}},
         "me": {"id": "15550100001:3@s.whatsapp.net", "name": "shop"}, "account": {"details": "CAE="}}


def db_rows(path: Path, table: str = "baileys_auth") -> dict[str, str]:
    with sqlite3.connect(path) as c:
        return dict(c.execute(f"SELECT key, value FROM {table} ORDER BY key"))


def make_db(path: Path, prekeys: int = 40, linked: bool = True) -> None:
    """A database shaped like a better-sqlite3 auth state: WAL, one table, Baileys' key names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("CREATE TABLE baileys_auth (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    creds = CREDS if linked else {"noiseKey": CREDS["noiseKey"]}
    rows = [("creds", json.dumps(creds)), ("session-15550100002.0", '{"_sessions": {}}'),
            ("session-broken.0", "{}"), ("app-state-sync-key-AAAAAbc", '{"keyData": "x"}')]
    rows += [(f"pre-key-{i}", json.dumps({"id": i})) for i in range(1, prekeys + 1)]
    c.executemany("INSERT INTO baileys_auth VALUES (?, ?)", rows)
    c.commit()
    c.close()
    give_to_bot(path.parent)


@pytest.fixture
def sqbot(bot: Bot) -> Bot:
    db = bot.auth.parent / "auth.db"
    make_db(db)
    bot.write_config(auth_store="sqlite", sqlite={"path": str(db), "table": "baileys_auth"})
    return bot


def dbpath(b: Bot) -> Path:
    return Path(b.config["sqlite"]["path"])


def as_bot_user() -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(BOT_UID, BOT_UID, BOT_UID)
        os.setresuid(BOT_UID, BOT_UID, BOT_UID)


def test_facts_count_rows_by_type_and_see_linked_creds(sqbot: Bot) -> None:
    doc = json.loads(sqbot.run("facts", "--json", check=True).stdout)
    auth = doc["bots"][0]["auth"]
    assert auth["store"] == "sqlite"
    db = auth["db"]
    assert db["reachable"] and db["rows"] == 44
    assert db["by_type"] == {"app-state-sync-key": 1, "creds": 1, "pre-key": 40, "session": 2}
    assert db["creds"]["linked"] and db["creds"]["me_id"].startswith("15550100001")


def test_round_trip_restores_the_same_rows_as_the_bot_user(sqbot: Bot) -> None:
    before = db_rows(dbpath(sqbot))
    r = sqbot.backup("cron")
    assert r["ok"] and r["verified"] and r["creds_linked"] and r["rows"] == 44
    d = sqbot.backups / r["id"]
    m = json.loads((d / "manifest.json").read_text())
    mem = m["members"]["auth.sqlite"]
    assert m["auth_store"] == "sqlite" and m["creds_from"] == "sqlite"
    assert mem["kind"] == "sqlite-db" and mem["rows"] == 44 and mem["integrity"] == "ok"
    assert hashlib.sha256((d / "auth.sqlite").read_bytes()).hexdigest() == mem["sha256"]
    if os.geteuid() == 0:
        assert (d / "auth.sqlite").stat().st_uid == 0
    with sqlite3.connect(dbpath(sqbot)) as c:  # creds lost, keys changed
        c.execute("UPDATE baileys_auth SET value = '{}' WHERE key = 'creds'")
        c.execute("DELETE FROM baileys_auth WHERE key LIKE 'pre-key-1%'")
    give_to_bot(dbpath(sqbot).parent)
    out = sqbot.json("restore", "--latest-verified")["results"][0]
    assert out["id"] == r["id"] and out["rows"] == 44
    assert db_rows(dbpath(sqbot)) == before
    if os.geteuid() == 0:
        assert dbpath(sqbot).stat().st_uid == BOT_UID
    assert not [p for p in dbpath(sqbot).parent.iterdir() if ".restore-" in p.name]


def test_online_backup_is_consistent_while_a_writer_holds_the_database(sqbot: Bot) -> None:
    """A writer (as the bot user) rewrites 300 rows in one transaction per generation, as fast as it can;
    every backup must hold one generation only and pass integrity_check."""
    path = dbpath(sqbot)
    script = (
        "import sqlite3, sys, json\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)\n"
        "c.execute('PRAGMA journal_mode = WAL')\n"
        "g = 0\n"
        "while True:\n"
        "    g += 1\n"
        "    c.execute('BEGIN IMMEDIATE')\n"
        "    c.executemany('INSERT OR REPLACE INTO baileys_auth VALUES (?, ?)',\n"
        "                  [(f'sender-key-g--{i}', json.dumps({'gen': g, 'pad': 'x' * 400})) for i in range(300)])\n"
        "    c.execute('COMMIT')\n"
        "    if g == 3: print('ready', flush=True)\n"
    )
    w = subprocess.Popen([PYTHON, "-c", script], preexec_fn=as_bot_user, stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        ids = [sqbot.backup("manual")["id"] for _ in range(4)]
    finally:
        w.kill()
        w.wait()
    gens_seen = set()
    for bid in ids:
        copy = sqbot.backups / bid / "auth.sqlite"
        with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            gens = {json.loads(v)["gen"] for (v,) in c.execute(
                "SELECT value FROM baileys_auth WHERE key LIKE 'sender-key-g--%'")}
            n = c.execute("SELECT count(*) FROM baileys_auth WHERE key LIKE 'sender-key-g--%'").fetchone()[0]
        assert len(gens) == 1 and n == 300, f"{bid}: torn copy: generations {sorted(gens)}"
        gens_seen |= gens
    assert len(gens_seen) > 1  # the writer really wrote between backups


def test_a_corrupt_copy_fails_verify(sqbot: Bot) -> None:
    r = sqbot.backup("cron")
    f = sqbot.backups / r["id"] / "auth.sqlite"
    data = bytearray(f.read_bytes())
    data[4096:4108] = b"\x0d" + b"\xff" * 11  # a leaf page whose header points outside the page
    f.write_bytes(bytes(data))
    m = json.loads((sqbot.backups / r["id"] / "manifest.json").read_text())
    m["members"]["auth.sqlite"]["sha256"] = m["members"]["auth.sqlite"]["plain_sha256"] = \
        hashlib.sha256(bytes(data)).hexdigest()  # checksums agree: only the database check can see it
    (sqbot.backups / r["id"] / "manifest.json").write_text(json.dumps(m))
    out = sqbot.json("verify", r["id"], expect=1)["results"][0]["backups"][0]
    assert not out["ok"] and any("sqlite" in e for e in out["errors"])
    p = sqbot.run("restore", r["id"])
    assert p.returncode == 1 and "refusing" in p.stderr


def test_a_garbage_database_from_the_bot_is_refused(sqbot: Bot) -> None:
    path = dbpath(sqbot)
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))
    give_to_bot(path.parent)
    p = sqbot.run("backup")
    assert p.returncode == 1 and "sqlite" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert list(sqbot.backups.iterdir()) == []  # the tmp set went, nothing kept


def test_reset_empties_only_this_bots_database(sqbot: Bot, tmp_path: Path) -> None:
    other = sqbot.auth.parent / "other.db"
    make_db(other, prekeys=3)
    before_other = db_rows(other)
    r = sqbot.json("reset")["results"][0]
    assert r["rows_deleted"] == 44 and db_rows(dbpath(sqbot)) == {}
    assert db_rows(other) == before_other
    pre = [b for b in sqbot.listing() if b["id"] == r["pre_reset_backup"]]
    assert pre and pre[0]["verified"] and pre[0]["creds_linked"]


def test_prune_keys_drops_broken_sessions_and_old_prekeys(sqbot: Bot) -> None:
    sqbot.write_config(prune_keys={"prekeys_keep": 10})
    dry = sqbot.json("prune-keys", "--dry-run")["results"][0]
    assert dry["db_removed"] == {"session": 1, "pre-key": 30, "sender-key": 0} and len(db_rows(dbpath(sqbot))) == 44
    r = sqbot.json("prune-keys")["results"][0]
    assert r["db_removed"] == dry["db_removed"] and r["pre_prune_backup"]
    keys = set(db_rows(dbpath(sqbot)))
    assert "creds" in keys and "session-15550100002.0" in keys and "session-broken.0" not in keys
    assert {k for k in keys if k.startswith("pre-key-")} == {f"pre-key-{i}" for i in range(31, 41)}


def test_missing_database_backs_up_as_not_linked(sqbot: Bot) -> None:
    for p in dbpath(sqbot).parent.glob("auth.db*"):
        p.unlink()
    r = sqbot.backup("manual")
    assert r["ok"] and not r["creds_linked"]
    assert not dbpath(sqbot).exists()  # never created by a look


def test_bad_sqlite_config_exits_2(sqbot: Bot) -> None:
    sqbot.write_config(sqlite={"path": "relative.db"})
    p = sqbot.run("facts")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    sqbot.write_config(sqlite={"path": "/x/auth.db", "table": 'x"; DROP'})
    assert sqbot.run("facts").returncode == 2


def store_keys(b: Bot) -> dict[str, object]:
    """The bot's keys as the bot would read them, whatever its store (values parsed)."""
    cfg = b.config
    if cfg["auth_store"] == "sqlite":
        return {k: json.loads(v) for k, v in db_rows(dbpath(b)).items()}
    if cfg["auth_store"] == "postgres":
        from agent_helpers import psql
        out = psql("SELECT json_build_object('k', key, 'v', value)::text FROM baileys_auth "
                   "WHERE session = 'shop'", cfg["postgres"]["dbname"])
        return {d["k"]: d["v"] for d in map(json.loads, out.splitlines())}
    out = {}
    for p in b.auth.iterdir():
        out[p.name[:-5].replace("--", "::") if p.name.startswith("sender-key-1") else p.name[:-5]] = \
            json.loads(p.read_text())
    return out


def test_migrate_files_to_sqlite_to_postgres_and_back_keeps_every_key(bot: Bot, pgdb: str, tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("127.0.0.1:5432:*:postgres:not-a-real-password\n")
    passfile.chmod(0o600)
    (bot.auth / "sender-key-120363@g.us--15550100002--0.json").write_text('{"k": 1}')
    give_to_bot(bot.auth)
    bot.write_config(postgres={"host": "127.0.0.1", "port": 5432, "dbname": pgdb, "user": "postgres",
                               "password_file": str(passfile), "table": "baileys_auth", "session": "shop"},
                     sqlite={"path": str(bot.auth.parent / "auth.db"), "table": "baileys_auth"})
    from agent_helpers import psql
    psql("DROP TABLE baileys_auth", pgdb)  # a bot that never ran on postgres: the agent creates the table
    start = store_keys(bot)
    assert "sender-key-120363@g.us::15550100002::0" in start and start["creds"]["me"]
    for src, dst in (("files", "sqlite"), ("sqlite", "postgres"), ("postgres", "files")):
        r = bot.json("migrate", "--to", dst)["results"][0]
        assert (r["from"], r["to"], r["keys"], r["creds_linked"]) == (src, dst, len(start), True), r
        assert r["by_type"] == r["source_by_type"]
        pre = [b for b in bot.listing() if b["id"] == r["pre_migrate_backup"]]
        assert pre and pre[0]["verified"] and pre[0]["reason"] == "pre-migrate"
        bot.write_config(auth_store=dst)  # what the playbook's switch does to the agent config
        assert store_keys(bot) == start, f"{src} -> {dst}"
    if os.geteuid() == 0:
        assert {p.stat().st_uid for p in [bot.auth, *bot.auth.iterdir()]} == {BOT_UID}
        assert dbpath(bot).stat().st_uid == BOT_UID


def test_migrate_refuses_an_unlinked_store_or_the_same_store(sqbot: Bot) -> None:
    p = sqbot.run("migrate", "--to", "sqlite")
    assert p.returncode == 2 and "already" in p.stderr
    assert sqbot.run("migrate", "--to", "postgres").returncode == 2  # no postgres settings: config error
    with sqlite3.connect(dbpath(sqbot)) as c:
        c.execute("UPDATE baileys_auth SET value = '{}' WHERE key = 'creds'")
    before = sorted(p.name for p in sqbot.auth.iterdir())
    p = sqbot.run("migrate", "--to", "files")
    assert p.returncode == 1 and "no linked creds" in p.stderr
    assert sorted(p.name for p in sqbot.auth.iterdir()) == before  # the files store untouched


def test_carry_copies_an_adopted_store_into_the_managed_one_and_leaves_it_as_it_was(bot: Bot, tmp_path: Path) -> None:
    """The move into the managed layout: the adopted config kept aside, the bot's own config now managed
    (here on SQLite); `migrate --from-dir` copies from the kept store, verified backup first."""
    kept = tmp_path / "adopted"
    kept.mkdir(mode=0o700)
    (kept / "shop.json").write_text(json.dumps({**bot.config, "adopted": True, "workdir": str(tmp_path / "app")}))
    before = sorted((p.name, p.read_bytes()) for p in bot.auth.iterdir())
    db = bot.auth.parent / "auth.db"
    bot.write_config(auth_store="sqlite", sqlite={"path": str(db), "table": "baileys_auth"})
    r = bot.json("migrate", "--from-dir", str(kept))["results"][0]
    assert (r["from"], r["to"], r["creds_linked"]) == ("adopted files", "sqlite", True), r
    assert r["keys"] == len(before) and r["me_id"].startswith("15550100001")
    pre = [b for b in bot.listing() if b["id"] == r["pre_migrate_backup"]]
    assert pre and pre[0]["verified"]
    assert json.loads(db_rows(db)["creds"])["me"]["id"].startswith("15550100001")
    assert sorted((p.name, p.read_bytes()) for p in bot.auth.iterdir()) == before  # only read
    (kept / "shop.json").write_text(json.dumps({**bot.config}))  # a kept config that is not adopted: refused
    p = bot.run("migrate", "--from-dir", str(kept))
    assert p.returncode == 2 and "adopted" in p.stderr
