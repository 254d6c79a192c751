"""Ctrl-C against the playbooks' cancel gates, with real ansible-runner and ansible-playbook: a step that
passed its gate runs to its end and reports what it did; no gated step starts after the signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _gate(what: str) -> str:
    return (f'    - name: "Cancel gate | {what}"\n'
            "      ansible.builtin.assert:\n"
            "        that: waops_cancel_file is not defined or waops_cancel_file is not exists\n"
            f'        fail_msg: "cancelled by the operator before {what}"\n'
            "        quiet: true\n")


PLAYBOOK = (
    "- hosts: localhost\n"
    "  connection: local\n"
    "  gather_facts: false\n"
    "  tasks:\n"
    "    - name: stop the service\n"
    "      ansible.builtin.command: sleep 3\n"
    "      changed_when: false\n"
    + _gate("the reset")
    + "    - name: reset the session\n"
    "      ansible.builtin.shell: >-\n"
    "        sleep 3; touch {d}/keys-deleted;\n"
    "        echo '{{\"results\": [{{\"ok\": true, \"pre_reset_backup\": \"B1\", \"files_removed\": 7}}]}}'\n"
    "    - name: set the pairing method\n"
    "      ansible.builtin.command: sleep 3\n"
    "      changed_when: false\n"
    + _gate("the prune")
    + "    - name: prune keys\n"
    "      ansible.builtin.command: touch {d}/pruned\n"
)

INVENTORY = "localhost ansible_connection=local ansible_python_interpreter={python}\n"


def _run_with_sigint_at(tmp: Path, task: str) -> dict:
    (tmp / "p.yml").write_text(PLAYBOOK.format(d=tmp))
    (tmp / "hosts").write_text(INVENTORY.format(python=sys.executable))
    code = textwrap.dedent(
        f"""\
        import json, os, signal, threading
        from waops.execute import run_playbook
        def on_progress(p):
            if p.kind == "task_start" and p.task == {task!r}:
                threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT)).start()
        r = run_playbook({str(tmp / "p.yml")!r}, inventory={str(tmp / "hosts")!r}, timeout_s=120,
                         on_progress=on_progress)
        print(json.dumps(r.to_dict()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sigint_before_a_gated_step_starts_none(tmp_path: Path) -> None:
    res = _run_with_sigint_at(tmp_path, "stop the service")
    assert not res["ok"]
    assert not (tmp_path / "keys-deleted").exists() and not (tmp_path / "pruned").exists()
    assert res["done"] == []


def test_sigint_during_a_gated_step_lets_it_finish_and_starts_no_other(tmp_path: Path) -> None:
    res = _run_with_sigint_at(tmp_path, "reset the session")
    assert not res["ok"]
    assert (tmp_path / "keys-deleted").exists()  # it had started: it ends, never half-way
    assert not (tmp_path / "pruned").exists()  # the next destructive step never starts
    assert [(d["task"], d["rc"], d["report"]["results"][0]["pre_reset_backup"]) for d in res["done"]] == [
        ("reset the session", 0, "B1")]


def _flat(tasks: list[dict]) -> list[dict]:
    """Tasks in run order, the insides of blocks included."""
    out: list[dict] = []
    for t in tasks:
        out += _flat(t["block"]) if "block" in t else [t]
    return out


@pytest.mark.parametrize("entry", ["reset.yml", "restore.yml", "prune_keys.yml"])
def test_every_session_changing_agent_call_has_a_gate_right_before_it(entry: str) -> None:
    """The repair playbooks call the waops_repair role; its entry points hold the agent calls."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "roles" / "waops_repair" / "tasks" / entry
    tasks = _flat(yaml.safe_load(path.read_text()))
    for i, t in enumerate(tasks):
        argv = str((t.get("ansible.builtin.command") or {}).get("argv") or "")
        if "waops_repair_agent" in argv and any(f"'{a}'" in argv for a in ("reset", "restore", "prune-keys")):
            assert tasks[i - 1]["name"].startswith("Cancel gate"), (entry, t["name"])
            break
    else:
        raise AssertionError(f"{entry}: no agent call found")
