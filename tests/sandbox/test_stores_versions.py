"""The PostgreSQL auth store, the ESM-only 7.x library, and the keep-alive agent's ESM entry."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sandbox.harness import KEEPALIVE_DIR, Sim, node_binary, wait_until

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


@pytest.fixture
def pg_table() -> str:
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(**PG, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    table = f"waops_test_auth_{secrets.token_hex(4)}"
    yield table
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.close()


def test_postgres_store_links_and_answers(sim: Sim, phone: str, make_bot, pg_table: str) -> None:
    import psycopg

    bot = make_bot(
        sim,
        phone,
        name="pgbot",
        WAOPS_AUTH_STORE="postgres",
        WAOPS_PG_HOST=PG["host"],
        WAOPS_PG_PORT=str(PG["port"]),
        WAOPS_PG_DB=PG["dbname"],
        WAOPS_PG_USER=PG["user"],
        WAOPS_PG_TABLE=pg_table,
    )
    bot.wait_for("uploaded pre-keys")
    assert "is up" in sim.client.send_message(phone, "test", timeout=5)
    with psycopg.connect(**PG) as conn:
        rows = conn.execute(f"SELECT session, key, value FROM {pg_table}").fetchall()
    assert {r[0] for r in rows} == {"pgbot"}
    keys = {r[1] for r in rows}
    assert sum(k.startswith("pre-key-") for k in keys) == 30
    assert "session-15550109999.0" in keys
    creds = next(r[2] for r in rows if r[1] == "creds")
    assert creds["me"]["id"].startswith(f"{phone}:") and creds["noiseKey"]["public"]["type"] == "Buffer"
    assert not bot.auth_dir.exists()  # nothing went to the files store

    # A restart logs in from the rows alone.
    bot.stop()
    bot.start()
    bot.wait_for("opened connection to WA", count=2)
    assert bot.count("pairing configured successfully") == 1


def _release_with(bot_app: Path, tmp_path: Path, version: str) -> Path:
    """A copy of the installed bot whose node_modules/baileys points at another vendored version."""
    release = tmp_path / f"release-{version}"
    shutil.copytree(bot_app, release, symlinks=True)
    link = release / "node_modules" / "baileys"
    link.unlink()
    link.symlink_to(Path("..") / "vendor" / f"baileys-{version}")
    return release


def test_commonjs_bot_cannot_require_esm_only_7x(bot_app: Path, tmp_path: Path) -> None:
    release = _release_with(bot_app, tmp_path, "7.0.0-rc.9")
    proc = subprocess.run(
        [node_binary(), "index.js"],
        cwd=release,
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": "/usr/bin:/bin", "WAOPS_SIM_URL": "tcp://127.0.0.1:9"},
    )
    assert proc.returncode == 1
    # node >= 20.19 can require() ES modules, but this package exports only an "import" condition.
    assert "ERR_PACKAGE_PATH_NOT_EXPORTED" in proc.stderr or "ERR_REQUIRE_ESM" in proc.stderr


ESM_BOT = """
import makeWASocket, { useMultiFileAuthState, DisconnectReason, version } from 'baileys'
import { attach } from '%(keepalive)s'

const start = async () => {
  const { state, saveCreds } = await useMultiFileAuthState(process.env.WAOPS_AUTH_DIR)
  const sock = makeWASocket({ auth: state, waWebSocketUrl: process.env.WAOPS_SIM_URL })
  attach(sock, { library: { name: 'baileys', version } })
  sock.ev.on('creds.update', saveCreds)
  sock.ev.on('connection.update', ({ connection, lastDisconnect }) => {
    if (connection === 'open') sock.sendPresenceUpdate('available')
    if (connection === 'close' && lastDisconnect.error.output.statusCode !== DisconnectReason.loggedOut) start()
  })
}
start()
"""


def test_esm_bot_on_7x_uploads_812_prekeys(sim: Sim, phone: str, bot_app: Path, tmp_path: Path) -> None:
    release = _release_with(bot_app, tmp_path, "7.0.0-rc.9")
    (release / "esm-bot.mjs").write_text(ESM_BOT % {"keepalive": KEEPALIVE_DIR / "waops-keepalive" / "index.mjs"})
    auth, health = tmp_path / "auth", tmp_path / "health.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "WAOPS_SIM_URL": sim.url,
        "WAOPS_PHONE": phone,
        "WAOPS_AUTH_DIR": str(auth),
        "WAOPS_HEALTH_FILE": str(health),
        "WAOPS_BOT": "esm",
    }
    with open(tmp_path / "esm.out", "wb") as out:
        proc = subprocess.Popen(
            [node_binary(), "esm-bot.mjs"], cwd=release, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: len(list(auth.glob("pre-key-*.json"))) == 812, 15, what="812 pre-keys")
        wait_until(
            lambda: any(s["phone"] == phone and s["had_keepalive"] for s in sim.client.sessions()),
            5,
            what="presence seen by the simulator",
        )
        doc = json.loads(health.read_text())
        assert doc["connection"] == "open" and doc["library"]["version"] == "7.0.0-rc.9"
        assert sim.client.phone(phone)["last_client_version"] == "7.0.0-rc.9"
    finally:
        proc.terminate()
        proc.wait(5)


def test_sqlite_store_links_answers_and_logs_in_again_from_the_file(
        sim: Sim, phone: str, make_bot, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "sq" / "auth.db"
    bot = make_bot(sim, phone, name="sqbot", WAOPS_AUTH_STORE="sqlite", WAOPS_SQLITE_PATH=str(db),
                   WAOPS_SQLITE_TABLE="baileys_auth")
    bot.wait_for("uploaded pre-keys")
    assert "is up" in sim.client.send_message(phone, "test", timeout=5)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT key, value FROM baileys_auth"))
    assert sum(k.startswith("pre-key-") for k in rows) == 30
    creds = json.loads(rows["creds"])
    assert creds["me"]["id"].startswith(f"{phone}:") and creds["noiseKey"]["public"]["type"] == "Buffer"
    assert not bot.auth_dir.exists()  # nothing went to the files store

    bot.stop()
    bot.start()
    bot.wait_for("opened connection to WA", count=2)
    assert bot.count("pairing configured successfully") == 1
