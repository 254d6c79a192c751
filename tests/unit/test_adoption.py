"""Adopted bots in the inventory: the entry's shape is checked when the inventory is read, with an error
that names the key and the fix; the roles render the agent config from the same keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from waops.errors import UsageError
from waops.inventory import load

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = {
    "name": "wa-service", "adopted": True,
    "service": {"manager": "pm2", "app": "baileys-whatsapp-service", "pm2_home": "/root/.pm2", "user": "root"},
    "workdir": "/root/baileys-whatsapp-service",
    "auth": {"folder": "/root/.baileys_auth_info",
             "postgres": {"dsn": "postgresql://bot:s3cr%3At@db.example.com:25060/defaultdb?sslmode=require",
                          "table": "baileys_auth", "key_column": "key", "value_column": "value", "rows": "table"}},
    "logs": {"out": "/root/.pm2/logs/baileys-whatsapp-service-out.log",
             "err": "/root/.pm2/logs/baileys-whatsapp-service-error.log"},
}


def _inv(tmp_path: Path, *bots: dict) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"waops_bot_hosts": {"hosts": {
        "bot1.example.com": {"ansible_host": "192.0.2.10", "waops_bots": list(bots)}}}}}}))
    return inv


def test_runbook_entry_is_read(tmp_path: Path) -> None:
    (h,) = load(_inv(tmp_path, RUNBOOK, {"name": "shop"}))
    adopted, managed = h.bots
    assert (adopted.name, adopted.service_manager, adopted.auth_store) == ("wa-service", "pm2", "postgres")
    assert adopted.adopted is not None and adopted.adopted.folder == "/root/.baileys_auth_info"
    assert adopted.adopted.postgres is not None and adopted.adopted.postgres.rows.kind == "table"
    assert "s3cr" not in repr(adopted)
    assert managed.adopted is None


@pytest.mark.parametrize(("change", "message"), [
    ({"service": None}, "service is required"),
    ({"service": {"manager": "supervisor"}}, "service.manager must be pm2 or systemd"),
    ({"service": {"manager": "systemd", "unit": "bot"}}, "must be a systemd unit name ending in .service"),
    ({"workdir": "relative/dir"}, "workdir must be an absolute path"),
    ({"workdir": "/root/../etc"}, "must not contain . or .. parts"),
    ({"auth": {}}, "auth needs a folder"),
    ({"source": {"type": "git"}}, "source describe a bot waops deploys"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"auth": {"postgres": {"dsn": "mysql://x@h/d"}}}, "dsn must be a postgresql://"),
    ({"auth": {"postgres": {"dsn": "postgresql://u@h/d", "table": "x; drop"}}}, "must be a plain identifier"),
    ({"auth": {"postgres": {"dsn": "postgresql://u@h/d", "rows": "some"}}}, "rows says which rows"),
    ({"auth": {"postgres": {"dsn": "postgresql://u@h/d", "rows": {"column": "key", "value": "x"}}}},
     "must differ from the key and value columns"),
])
def test_bad_entries_are_named(tmp_path: Path, change: dict, message: str) -> None:
    entry = {**RUNBOOK, **change}
    with pytest.raises(UsageError) as exc:
        load(_inv(tmp_path, entry))
    assert message in str(exc.value) and "adopted bot wa-service" in str(exc.value)
    assert "s3cr" not in str(exc.value)


def test_role_renders_the_agent_config(tmp_path: Path) -> None:
    """The waops_host template, rendered by Ansible for the runbook entry: the agent is pointed at the
    bot's own service, folder and table; the password is in no line of it."""
    bot = {**RUNBOOK, "auth": {**RUNBOOK["auth"], "postgres": {
        **RUNBOOK["auth"]["postgres"], "rows": {"prefix": "wa:"}}}}
    play = tmp_path / "render.yml"
    out = tmp_path / "bot.json"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        # role_path: the defaults read the known-bad list from the role's files, as inside the role
        "vars": {"waops_bots": [bot], "ansible_python_interpreter": sys.executable,
                 "role_path": str(ROOT / "roles/waops_host")},
        "tasks": [{"ansible.builtin.include_vars": {"file": str(ROOT / "roles/waops_host/defaults/main.yml")}},
                  {"ansible.builtin.template": {"src": str(ROOT / "roles/waops_host/templates/bot.json.j2"),
                                                "dest": str(out), "mode": "0600"},
                   "vars": {"waops_host_item": bot, "__waops_host_name": bot["name"], "__waops_host_user": "root",
                            "__waops_host_offhost_repo": ""}}],
    }]))
    p = subprocess.run(["ansible-playbook", "-i", "localhost,", str(play)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                       check=False)
    assert p.returncode == 0, p.stdout[-2000:]
    doc = json.loads(out.read_text())
    assert doc["adopted"] is True and doc["workdir"] == "/root/baileys-whatsapp-service"
    assert (doc["service_manager"], doc["service_name"], doc["pm2_home"], doc["user"]) == (
        "pm2", "baileys-whatsapp-service", "/root/.pm2", "root")
    assert doc["auth_store"] == "postgres" and doc["auth_dir"] == "/root/.baileys_auth_info"
    assert doc["pm2_logs"]["err"].endswith("-error.log")
    pg = doc["postgres"]
    assert (pg["host"], pg["port"], pg["dbname"], pg["user"], pg["sslmode"]) == (
        "db.example.com", 25060, "defaultdb", "bot", "require")
    assert pg["rows"] == {"kind": "prefix", "prefix": "wa:"} and pg["key_column"] == "key"
    assert "s3cr" not in out.read_text()
