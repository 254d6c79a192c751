"""Helpers for the host agent tests: run the agent as a real process (as cron and the playbooks do)
against a temp bot, and talk to the throwaway PostgreSQL database."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENT = Path(__file__).resolve().parents[2] / "roles" / "waops_host" / "files" / "waops-host"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BOT_UID = 65534  # `nobody`: the bot user of the tests' bots
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
TABLE_DDL = (
    "CREATE TABLE baileys_auth(session text not null, key text not null, value jsonb not null, "
    "updated_at timestamptz not null default now(), primary key (session, key))"
)


@dataclass
class Bot:
    root: Path
    name: str = "shop"
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg_dir(self) -> Path:
        return self.root / "cfg"

    @property
    def auth(self) -> Path:
        return Path(self.config["auth_dir"])

    @property
    def backups(self) -> Path:
        return Path(self.config["backup_dir"])

    @property
    def lock_dir(self) -> Path:
        return self.root / "lock"

    def write_config(self, **changes: Any) -> None:
        self.config.update(changes)
        self.cfg_dir.mkdir(exist_ok=True)
        (self.cfg_dir / f"{self.name}.json").write_text(json.dumps(self.config))

    def run(self, *args: str, check: bool = False, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [PYTHON, str(AGENT), *args, "--bot", self.name, "--config-dir", str(self.cfg_dir),
               "--lock-dir", str(self.lock_dir)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})}, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"{args} exited {p.returncode}: {p.stderr}")
        return p

    def json(self, *args: str, expect: int = 0) -> dict[str, Any]:
        p = self.run(*args, "--json")
        assert p.returncode == expect, f"{args}: exit {p.returncode}, stderr: {p.stderr}"
        return json.loads(p.stdout)

    def backup(self, reason: str = "manual") -> dict[str, Any]:
        return self.json("backup", "--reason", reason)["results"][0]

    def listing(self) -> list[dict[str, Any]]:
        return self.json("list")["results"][0]["backups"]

    def populate(self, prekeys: int = 30, linked: bool = True) -> None:
        """An auth folder shaped like Baileys' useMultiFileAuthState writes it."""
        self.auth.mkdir(parents=True, exist_ok=True)
        creds: dict[str, Any] = {"noiseKey": {"private": {"type": "Buffer", "data": "AAEC"}}, "registered": False}
        if linked:
            creds.update(me={"id": "15550100001:3@s.whatsapp.net", "name": "shop"},
                         account={"details": "CAE=", "accountSignature": "AAA="})
        (self.auth / "creds.json").write_text(json.dumps(creds))
        for i in range(1, prekeys + 1):
            (self.auth / f"pre-key-{i}.json").write_text(json.dumps(
                {"public": {"type": "Buffer", "data": secrets.token_urlsafe(24)}, "id": i}))
        (self.auth / "session-15550100002.0.json").write_text('{"_sessions": {}}')
        (self.auth / "app-state-sync-key-AAAAAbc.json").write_text('{"keyData": "x"}')
        (self.auth / "sender-key-memory-120363@g.us.json").write_text('{"a": true}')
        give_to_bot(self.auth)


def give_to_bot(path: Path) -> None:
    """Files the tests write as root in the bot's folders become the bot user's, as on a host."""
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.chown(p, BOT_UID, BOT_UID, follow_symlinks=False)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes (the "identical" check of a round trip)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def psql(sql: str, db: str = "postgres") -> str:
    p = subprocess.run(["psql", "-X", "-qAt", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"],
                        "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return p.stdout.strip()


def rows(db: str, session: str = "shop") -> list[str]:
    out = psql(f"SELECT key || '=' || value::text FROM baileys_auth WHERE session = '{session}' ORDER BY key", db)
    return out.splitlines()
