"""The collection's action plugins run inside ansible-playbook: waops_diagnose decides with waops's own
rules and decision table (the same answer as waops.diagnose and waops.plan) and applies the per-cause
policy; waops_incident records an incident with its trigger in waops's incident store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tests.unit.test_rules_facts import L401, bot

from waops.diagnose import diagnose
from waops.incidents import connect
from waops.plan import default_policy, make_plan

ROOT = Path(__file__).resolve().parents[2]


def _play(tmp: Path, tasks: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Run tasks on localhost; return what each registered (as the playbook's last debug printed it)."""
    book = tmp / "play.yml"
    book.write_text(yaml.safe_dump([{"name": "Plugins", "hosts": "localhost", "gather_facts": False,
                                     "tasks": [*tasks, {"name": "Show", "ansible.builtin.copy": {
                                         "content": "{{ {'out': out} | to_json }}", "dest": str(tmp / "out.json"),
                                         "mode": "0600"}}]}]))
    (tmp / "vars.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    args = ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
            "-e", f"@{tmp / 'vars.json'}"]
    proc = subprocess.run(["ansible-playbook", *args, str(book)], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text())["out"]


def _diagnose_task(policy: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [{"name": "Diagnose", "waops.ops.waops_diagnose": {"bot": "shop", "facts": "{{ facts }}",
                                                              "policy": policy or {}}, "register": "d"},
            {"name": "Keep", "ansible.builtin.set_fact": {"out": "{{ d }}"}}]


def test_diagnose_plugin_gives_the_controllers_answer_and_the_policy(tmp_path: Path) -> None:
    down = bot(**{"process.status": "stopped", "process.pid": None, "health.connection": "close"})
    got = _play(tmp_path, _diagnose_task(), {"facts": {"bots": [down]}})
    want = diagnose(down)
    assert got["cause"] == want.cause == "process_down"
    assert got["plan"] == json.loads(json.dumps(make_plan(want, "shop").to_dict()))
    assert got["policy"] == "auto" == default_policy(make_plan(want, "shop"))

    got = _play(tmp_path, _diagnose_task({"process_down": "never"}), {"facts": {"bots": [down]}})
    assert got["policy"] == "never"

    logged_out = bot(**{"health.connection": "close", "health.last_disconnect": {"code": 401},
                        "logs.matched": [{"time": "2026-11-22T07:05:00.000Z", "stream": "out", "text": L401,
                                          "code": 401}], "logs.tail": [L401],
                        "auth.creds.linked": False})
    got = _play(tmp_path, _diagnose_task(), {"facts": {"bots": [logged_out]}})
    assert got["cause"] == diagnose(logged_out).cause
    assert got["policy"] == default_policy(make_plan(diagnose(logged_out), "shop"))


def test_incident_plugin_records_the_trigger(tmp_path: Path) -> None:
    store = tmp_path / "incidents.db"
    tasks = [
        {"name": "Open", "waops.ops.waops_incident": {"store": str(store), "bot": "shop", "host": "bot1.example.com",
                                                      "cause": "process_down", "trigger": "auto",
                                                      "started_at": "2026-12-01T03:00:00+00:00",
                                                      "evidence": ["process stopped"]}, "register": "o"},
        {"name": "Close", "waops.ops.waops_incident": {"store": str(store), "state": "closed", "id": "{{ o.id }}",
                                                       "outcome": "resolved", "steps": [{
                                                           "name": "restart", "result": "ok",
                                                           "started_at": "2026-12-01T03:00:30+00:00",
                                                           "ended_at": "2026-12-01T03:00:40+00:00"}]}},
        {"name": "Keep", "ansible.builtin.set_fact": {"out": "{{ o }}"}},
    ]
    got = _play(tmp_path, tasks, {})
    with connect(str(store)) as s:
        inc = s.get(int(got["id"]))
    assert inc is not None and inc.trigger == "auto" and inc.outcome == "resolved" and inc.cause == "process_down"
    assert [st.name for st in inc.steps] == ["restart"] and inc.mttr_s is not None
