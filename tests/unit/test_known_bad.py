"""Known-bad library versions: the waops_bot role refuses to make such a release current (real
ansible-playbook on localhost against the role's own task file), and both roles know the same list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from waops_host.versions import known_bad

REPO = Path(__file__).resolve().parents[2]


def _deploy_check(tmp: Path, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
    release = tmp / "shop" / "releases" / "r1"
    release.mkdir(parents=True)
    (release / ".waops-release.json").write_text(json.dumps({"id": "r1", "library": {"name": "baileys",
                                                                                   "version": version}}))
    (tmp / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "check", "ansible.builtin.include_role": {"name": "waops_bot", "tasks_from": "known_bad"},
                   "vars": {"__waops_bot_root": str(tmp / "shop"), "__waops_bot_name": "shop",
                            "__waops_bot_release_id": "r1", "__waops_bot_library": "baileys"}}]}]))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
                           *extra, str(tmp / "play.yml")], capture_output=True, text=True, env=env, timeout=180)


def test_a_known_bad_release_is_refused(tmp_path: Path) -> None:
    proc = _deploy_check(tmp_path, "6.7.20")
    assert proc.returncode != 0
    assert "6.7.20, which is known bad" in proc.stdout and "waops_bot_allow_known_bad" in proc.stdout


@pytest.mark.parametrize(("version", "extra"), [("6.7.18", ()), ("6.7.20", ("-e", "waops_bot_allow_known_bad=true"))])
def test_a_good_or_allowed_release_passes(tmp_path: Path, version: str, extra: tuple[str, ...]) -> None:
    proc = _deploy_check(tmp_path, version, *extra)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_both_roles_read_the_one_known_bad_list() -> None:
    """One owner: the agent package's known_bad.json, which both roles' defaults look up."""
    bot = yaml.safe_load((REPO / "roles/waops_bot/defaults/main.yml").read_text())
    host = yaml.safe_load((REPO / "roles/waops_host/defaults/main.yml").read_text())
    for value in (bot["waops_bot_known_bad_versions"], host["waops_host_known_bad_versions"]):
        assert "files/waops_host/known_bad.json" in value and "[" not in value.split("lookup")[0]
    assert "6.7.20" in known_bad() and "6.17.16" in known_bad()


def test_site_yml_checks_the_release_before_current_moves() -> None:
    """site.yml deploys through the waops_bot role, whose per-bot tasks run the known-bad check (above,
    with a real ansible-playbook) before `current` is pointed at the release."""
    site = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    names = {r if isinstance(r, str) else r.get("role") or r.get("name") for play in site for r in play.get("roles", [])}
    assert "waops.ops.waops_bot" in names, names
    main = yaml.safe_load((REPO / "roles/waops_bot/tasks/main.yml").read_text())
    assert any((t.get("ansible.builtin.include_tasks") or {}).get("file") == "bot.yml" for t in main)
    tasks = yaml.safe_load((REPO / "roles/waops_bot/tasks/bot.yml").read_text())
    check = next(i for i, t in enumerate(tasks) if (t.get("ansible.builtin.include_tasks") or {}).get("file")
                 == "known_bad.yml")
    switch = next(i for i, t in enumerate(tasks) if (t.get("ansible.builtin.file") or {}).get("dest", "")
                  .endswith("/current"))
    assert check < switch and not tasks[check].get("when") and not tasks[check].get("ignore_errors")
