"""The waops_bot role deploys only what the inventory names: no default source (the sandbox bot is the
lab's inventory's choice, never a fallback). Real ansible-playbook, check mode, on localhost: the
preflight stops a bot without a source before any task could change anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_role_has_no_default_source() -> None:
    defaults = yaml.safe_load((REPO / "roles/waops_bot/defaults/main.yml").read_text())
    assert defaults["waops_bot_source"] == {}
    assert not any("sandbox" in k for k in defaults), [k for k in defaults if "sandbox" in k]


def test_a_bot_without_a_source_stops_at_the_preflight(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "roles": [{"role": "waops_bot"}]}]))
    bots = [{"name": "shop", "source": {"type": "dir", "path": str(tmp_path)}}, {"name": "crm"}]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "--check", "-i", "localhost,", "-e",
                           f"ansible_python_interpreter={sys.executable}", "-e", json.dumps({"waops_bots": bots}),
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "Preflight | check the bot list" in proc.stdout
    assert "a source (the bot's own, or waops_bot_source) of type dir|archive|git" in proc.stdout, proc.stdout[-3000:]
    assert "ok=1 " in proc.stdout and "changed=0" in proc.stdout  # the argument spec check, then the preflight
