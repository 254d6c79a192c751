"""The checkout is the Ansible collection waops.ops: it builds with ansible-galaxy, installs from the tarball
into an empty path, and from there ansible-doc shows every role's argument_specs and ansible-playbook finds
the playbooks by FQCN; the role defaults and the argument_specs say the same thing."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"


def _clean_env(collections: Path) -> dict[str, str]:
    """Ansible as a user of the installed collection sees it: no checkout config, no waops on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=os.devnull)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built tarball, the empty path it was installed into)."""
    tmp = tmp_path_factory.mktemp("collection")
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp / "dist"), str(ROOT)],
                           cwd=tmp, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (tmp / "dist").glob(f"{GALAXY['namespace']}-{GALAXY['name']}-*.tar.gz")
    dest = tmp / "installed"
    inst = subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(dest), str(tarball)],
                          cwd=tmp, env=_clean_env(dest), capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return tarball, dest


def test_the_collection_names_the_ansible_core_line_that_pyproject_pins() -> None:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    pins = (ROOT / "pyproject.toml").read_text()
    assert '"ansible-core>=2.19,<2.20"' in pins
    assert runtime["requires_ansible"] == ">=2.19.0,<2.20.0"


def test_tarball_holds_the_ansible_content_and_nothing_of_the_controller_lab_or_tests(installed) -> None:
    tarball, _ = installed
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    tops = {n.split("/")[0] for n in names}
    assert {"roles", "playbooks", "meta", "MANIFEST.json", "FILES.json", "README.md"} <= tops, tops
    for junk in ("controller", "tests", "molecule", "docs", "inventories", ".collections", ".ci", "pyproject.toml",
                 "monitoring", "ansible.cfg", ".git"):
        assert junk not in tops, junk
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "roles/waops_host/files/waops-host" in names
    assert "playbooks/site.yml" in names


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_shows_each_roles_argument_specs_from_the_installed_collection(installed, role: str) -> None:
    _, dest = installed
    doc = subprocess.run(["ansible-doc", "-t", "role", "--json", f"{FQCN}.{role}"], cwd=dest,
                         env=_clean_env(dest), capture_output=True, text=True, timeout=300)
    assert doc.returncode == 0, doc.stderr
    shown = json.loads(doc.stdout)[f"{FQCN}.{role}"]
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert set(shown["entry_points"]) == set(specs)
    for entry, spec in specs.items():
        assert set(shown["entry_points"][entry].get("options") or {}) == set(spec.get("options") or {}), entry
    assert str(dest) in shown["path"]  # the installed copy, not the checkout


def test_installed_playbooks_are_found_by_fqcn_without_the_checkout(installed, tmp_path: Path) -> None:
    _, dest = installed
    for book in sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml")):
        proc = subprocess.run(["ansible-playbook", "--syntax-check", "-i", "localhost,", f"{FQCN}.{book}"],
                              cwd=tmp_path, env=_clean_env(dest), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (book, proc.stdout[-2000:], proc.stderr[-2000:])
        assert str(dest) in proc.stdout, proc.stdout


def test_playbooks_name_our_roles_by_fqcn_only() -> None:
    for book in (ROOT / "playbooks").rglob("*.yml"):
        for line in book.read_text().splitlines():
            stripped = line.strip()
            for key in ("- role:", "role:", "name:"):
                if stripped.startswith(key):
                    value = stripped[len(key):].strip()
                    assert value not in ROLES, f"{book.name}: {stripped} (use {FQCN}.{value})"


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_and_argument_specs_are_in_step(role: str) -> None:
    """Every public default is a documented option, every documented option of main has a default or is
    required, and a default written in the spec is the default the role uses."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    public = {k: v for k, v in defaults.items() if not k.startswith("__")}
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    main = specs["main"].get("options") or {}
    documented = {name for spec in specs.values() for name in (spec.get("options") or {})}
    assert set(public) - documented == set(), "defaults without an argument_specs entry"
    assert {k for k, o in main.items() if not o.get("required")} - set(public) == set(), "options without a default"
    for entry, spec in specs.items():
        for name, opt in (spec.get("options") or {}).items():
            if "default" in opt:
                assert opt["default"] == public[name], f"{entry}: {name}"
            assert name.startswith(f"{role}_"), f"{entry}: {name} is not role-prefixed"
            assert opt.get("required") or name in public, f"{entry}: {name} has no default and is not required"


def test_the_service_is_driven_in_one_place() -> None:
    """pm2 startOrRestart and the systemd reset-failed live only in the role's `control` entry point; the
    repairs (the waops_repair role's entry points) and the role's restart handler call it."""
    books = [*(ROOT / "roles").rglob("tasks/*.yml"), *(ROOT / "roles").rglob("handlers/*.yml"),
             *(ROOT / "playbooks").rglob("*.yml")]
    writers = sorted(str(p.relative_to(ROOT)) for p in books
                     if "startOrRestart" in p.read_text() or "reset-failed" in p.read_text())
    assert writers == ["roles/waops_service/tasks/control.yml"]
    callers = sorted(p.name for p in (ROOT / "roles" / "waops_repair" / "tasks").glob("*.yml")
                     if "tasks_from: control" in p.read_text())
    assert callers == ["pin.yml", "prune_keys.yml", "reset.yml", "restart.yml", "restore.yml", "rollback.yml",
                       "stop_duplicate.yml"], callers


def test_the_repair_playbooks_only_choose_hosts_and_call_the_repair_role() -> None:
    """The repair logic lives in the waops_repair role: each repair playbook is one play whose one task
    includes the role's entry point."""
    books = {"restart": "restart", "reset_session": "reset", "restore_session": "restore", "prune_keys": "prune_keys",
             "rollback_release": "rollback", "pin_library": "pin", "stop_duplicate": "stop_duplicate",
             "recover": "recover"}
    specs = yaml.safe_load((ROOT / "roles" / "waops_repair" / "meta" / "argument_specs.yml").read_text())
    for book, entry in books.items():
        (play,) = yaml.safe_load((ROOT / "playbooks" / f"{book}.yml").read_text())
        (task,) = play["tasks"]
        include = task["ansible.builtin.include_role"]
        assert include == {"name": f"{FQCN}.waops_repair", "tasks_from": entry}, book
        assert entry in specs["argument_specs"], entry
        assert set(task["vars"]) <= set(specs["argument_specs"][entry]["options"]), book


def _task_files(node: object) -> list[str]:
    """Every file an include_tasks / import_tasks names, anywhere in a playbook or task file."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.split(".")[-1] in ("include_tasks", "import_tasks"):
                found.append(value["file"] if isinstance(value, dict) else value)
            else:
                found += _task_files(value)
    elif isinstance(node, list):
        for item in node:
            found += _task_files(item)
    return found


def test_every_included_task_file_exists() -> None:
    """Dynamic includes escape `--syntax-check`: a playbook still naming a task file that moved into a role
    fails only when that branch runs, on a real host."""
    missing = []
    for path in [*(ROOT / "playbooks").glob("*.yml"), *(ROOT / "roles").glob("*/tasks/*.yml")]:
        for name in _task_files(yaml.safe_load(path.read_text())):
            if "{{" not in name and not (path.parent / name).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing
