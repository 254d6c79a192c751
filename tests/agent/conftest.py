"""Fixtures for the host agent tests: a temp bot (config, auth folder, backups, lock dir) and a
throwaway PostgreSQL database on 127.0.0.1, dropped afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import BOT_UID, TABLE_DDL, Bot, psql


@pytest.fixture
def bot_home() -> Iterator[Path]:
    """The bot user's directories, as on a host: reachable by that user (pytest's tmp dirs are root 0700),
    its state dir owned by it. Config, backups, locks and check state stay in root's tmp_path."""
    home = Path(tempfile.mkdtemp(prefix="waops-bot-"))
    home.chmod(0o711)
    (home / "state").mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(home / "state", BOT_UID, BOT_UID)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def bot(tmp_path: Path, bot_home: Path) -> Bot:
    b = Bot(tmp_path)
    b.write_config(
        schema=1, name="shop", user="nobody", service_manager="pm2", service_name="shop",
        pm2_home=str(bot_home / "pm2"), release_root=str(bot_home / "opt"), auth_store="files",
        auth_dir=str(bot_home / "state" / "auth"), health_file=str(bot_home / "state" / "health.json"),
        backup_dir=str(tmp_path / "backups"), backup_keep=12, library_package="baileys",
        expected_library_version="6.7.18", known_bad_versions=["6.7.20"], log_window_bytes=65536,
    )
    b.populate()
    return b


@pytest.fixture
def pgdb() -> Iterator[str]:
    """A throwaway database with the session table; dropped after the test."""
    try:
        psql("SELECT 1")
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip(f"PostgreSQL on 127.0.0.1 not available: {e}")
    name = f"waops_agent_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}")
    try:
        psql(TABLE_DDL, db=name)
        yield name
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pgbot(bot: Bot, pgdb: str, tmp_path: Path) -> Bot:
    """The same bot with its keys in PostgreSQL (plus another bot's rows that must never be touched)."""
    passfile = tmp_path / "pgpass"
    passfile.write_text("127.0.0.1:5432:*:postgres:not-a-real-password\n")
    passfile.chmod(0o600)
    bot.write_config(auth_store="postgres", postgres={
        "host": "127.0.0.1", "port": 5432, "dbname": pgdb, "user": "postgres",
        "password_file": str(passfile), "table": "baileys_auth", "session": "shop"})
    psql("INSERT INTO baileys_auth(session, key, value) SELECT 'shop', 'pre-key-' || i, "
         "jsonb_build_object('id', i, 'odd', E'back\\\\slash \"quote\" \\n newline \\t tab é') "
         "FROM generate_series(1, 200) i", db=pgdb)
    psql("INSERT INTO baileys_auth(session, key, value) VALUES ('shop', 'creds', "
         "'{\"me\": {\"id\": \"15550100001:3@s.whatsapp.net\"}, \"account\": {\"details\": \"x\"}}'), "
         "('shop', 'session-15550100002.0', '{\"_sessions\": {}}'), "
         "('other', 'creds', '{\"me\": {\"id\": \"other\"}, \"account\": {}}'), "
         "('other', 'pre-key-1', '{}')", db=pgdb)
    return bot
