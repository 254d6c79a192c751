"""A wheel built from the checkout carries the Ansible content and the sandbox, so `waops` works when it is
installed outside a checkout (the issue's skeleton requirement)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_playbooks_roles_inventories_and_works_outside_the_checkout(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("waops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ("waops/_assets/playbooks/site.yml", "waops/_assets/playbooks/reset_session.yml",
                   "waops/_assets/roles/waops_host/files/waops-host", "waops/_assets/ansible.cfg",
                   "waops/_assets/monitoring/waops-alerts.yml",
                   "waops/_assets/inventories/sandbox/group_vars/all.yml", "waops/sandbox/bot/package-lock.json",
                   "waops/cli/__init__.py"):
        assert member in names or any(n.startswith(member) for n in names), member
    assert not any("node_modules/" in n for n in names)  # the lockfile travels, not an install

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
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
