"""The operators' wheel: built from the checkout it carries the Ansible content, so `waops` works when it is
installed outside a checkout, and nothing of the lab: no nspawn code, no simulator, no sandbox bot, no
JavaScript stand-in for Baileys. The lab's own wheel (lab/) carries those and adds its commands to `waops`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _wheel(src: Path, out: Path, name: str) -> Path:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob(f"{name}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def waops_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(ROOT, tmp_path_factory.mktemp("dist"), "waops")


def test_wheel_has_no_lab_no_sandbox_and_no_javascript(waops_wheel: Path) -> None:
    names = zipfile.ZipFile(waops_wheel).namelist()
    assert "waops/cli/__init__.py" in names and "waops/verify.py" in names  # it is the real wheel
    # No module or directory of the lab anywhere in a path; no JS file (the vendored stand-in, the
    # sandbox bot); the keep-alive agent the roles install is the one exception, it runs on real hosts.
    lab = [n for n in names if re.search(r"(^|/)(lab|sandbox|waops_lab)(/|\.py$)", n) or n.endswith("demo.py")]
    assert lab == [], lab
    js = [n for n in names if n.endswith((".js", ".mjs", ".cjs"))
          and not n.startswith("waops/_assets/roles/waops_bot/files/waops-keepalive/")]
    assert js == [], js
    assert not any("baileys" in n.lower() and n.endswith(".json") for n in names)
    # the production inventory example carries no lab hook and no sandbox source
    example = zipfile.ZipFile(waops_wheel).read("waops/_assets/inventories/example/group_vars/all/main.yml").decode()
    assert "waops_lab" not in example and "type: sandbox" not in example


def test_wheel_carries_playbooks_roles_inventories_and_works_outside_the_checkout(waops_wheel: Path,
                                                                                 tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(waops_wheel).namelist())
    for member in ("waops/_assets/playbooks/site.yml", "waops/_assets/playbooks/reset_session.yml",
                   "waops/_assets/roles/waops_host/files/waops-host", "waops/_assets/ansible.cfg",
                   "waops/_assets/monitoring/waops-alerts.yml",
                   "waops/_assets/inventories/example/hosts.yml", "waops/cli/__init__.py",
                   "waops_host/schema.py", "waops_host/cli.py"):
        assert member in names or any(n.startswith(member) for n in names), member

    site = tmp_path / "site"
    zipfile.ZipFile(waops_wheel).extractall(site)
    # Outside the checkout, with only the wheel on the path: no lab commands, no default inventory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAOPS_")}
    env.update(PYTHONPATH=str(site), XDG_CONFIG_HOME=str(tmp_path / "cfg"), PYTHONNOUSERSITE="1")
    probe = subprocess.run([sys.executable, "-c", "import waops.assets as a; print(a.asset_root())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == site / "waops" / "_assets"
    # Ansible finds the roles by FQCN in the wheel's copy: a farm made in the user's cache maps it.
    env_cache = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    farm = subprocess.run([sys.executable, "-c", "import waops.assets as a; print(a.collections_path())"],
                          cwd=tmp_path, env=env_cache, capture_output=True, text=True, timeout=60)
    assert farm.returncode == 0, farm.stderr
    mapped = Path(farm.stdout.strip()) / "ansible_collections" / "waops" / "ops"
    assert (mapped / "roles" / "waops_bot" / "meta" / "argument_specs.yml").is_file()
    assert (mapped / "meta" / "runtime.yml").is_file() and (mapped / "playbooks" / "recover.yml").is_file()
    assert (mapped / "extensions" / "eda" / "rulebooks" / "waops_recover.yml").is_file()
    assert (mapped / "plugins" / "action" / "waops_diagnose.py").is_file()
    helped = subprocess.run([sys.executable, "-m", "waops", "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "diagnose" in helped.stdout and "provision" in helped.stdout
    no_inv = subprocess.run([sys.executable, "-m", "waops", "diagnose", "--all"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert no_inv.returncode == 2 and "WAOPS_INVENTORY" in no_inv.stderr, no_inv.stderr
    zipped = subprocess.run([sys.executable, "-c", "import waops.facts as f; print(len(f.agent_zip()))"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)  # the agent streamed from a wheel
    assert zipped.returncode == 0 and int(zipped.stdout) > 10_000, zipped.stderr


def test_lab_wheel_registers_its_commands(tmp_path: Path) -> None:
    wheel = _wheel(ROOT / "lab", tmp_path, "waops_lab")
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    assert "waops_lab/lab/core.py" in names and "waops_lab/sandbox/bot/package-lock.json" in names
    assert "waops_lab/sandbox/bot/vendor/core/socket.js" in names and "waops_lab/inventory/group_vars/all.yml" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = z.read(entry_points).decode()
    assert "[waops.commands]" in text and "lab = waops_lab.cli.lab:lab" in text
    assert "demo = waops_lab.cli.demo:demo" in text
