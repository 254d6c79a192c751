"""Tasks that write a file holding secrets (a bot's .env, .pgpass, the alert channels, the off-host
credentials) run with no_log: with --diff Ansible would print the whole file, passwords included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WRITERS = {"ansible.builtin.lineinfile", "ansible.builtin.template", "ansible.builtin.copy",
           "ansible.builtin.blockinfile", "ansible.builtin.replace"}
SECRET_FILES = (".env", ".pgpass", "alerts.json", "restic")


def tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task of a playbook or task file, blocks and plays included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            if key in node:
                yield from tasks(node[key])
        if any(k in node for k in WRITERS):
            yield node


def secret_writers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted([*REPO.glob("playbooks/*.yml"), *REPO.glob("roles/*/tasks/*.yml")]):
        for task in tasks(yaml.safe_load(path.read_text())):
            module = next(k for k in task if k in WRITERS)
            args = task[module] if isinstance(task[module], dict) else {}
            target = str(args.get("dest") or args.get("path") or "")
            if any(s in target for s in SECRET_FILES):
                found.append((f"{path.relative_to(REPO)}: {task.get('name')}", task))
    return found


def test_secret_files_exist_among_the_tasks() -> None:
    names = [n for n, _ in secret_writers()]
    assert any("waops_repair/tasks/reset.yml" in n for n in names), names  # the scan sees the task the fix is about


@pytest.mark.parametrize(("name", "task"), secret_writers(), ids=[n for n, _ in secret_writers()])
def test_a_task_writing_secrets_is_no_log(name: str, task: dict[str, Any]) -> None:
    assert task.get("no_log") is True, f"{name} writes a file with secrets without no_log"
