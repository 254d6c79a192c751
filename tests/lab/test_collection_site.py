"""The collection as a user installs it: `ansible-galaxy collection install` of the built tarball into an
empty path, then `ansible-playbook waops.ops.site` against a lab host, with neither the waops Python
package nor the checkout's ansible.cfg in sight. The bot comes up linked to the simulator."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab.test_provision_support import bot_running, health, wait_until

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def test_site_from_the_installed_collection_provisions_a_lab_host(lab_factory, tmp_path: Path) -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    fqcn = f"{galaxy['namespace']}.{galaxy['name']}"
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (tarball,) = tmp_path.glob("*.tar.gz")
    dest = tmp_path / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="True")
    inst = subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(dest), str(tarball)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr

    lab = lab_factory("t-coll", 1, ("pm2",))
    (host,) = lab.hosts()
    # No waops package for Ansible's python: a stand-in that refuses to import shadows any installed one,
    # so a playbook or plugin that needed the controller would fail here.
    shadow = tmp_path / "shadow" / "waops"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the waops Python package is not installed here')\n")
    env["PYTHONPATH"] = str(shadow.parent)
    probe = subprocess.run(["python3", "-c", "import waops"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0
    # The lab's inventory names the sandbox bot as the bot's source (waops_bot_source, a plain directory).
    run = subprocess.run(["ansible-playbook", "-i", str(lab.inventory_dir), f"{fqcn}.site"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert wait_until(lambda: health(lab, host).get("connection") == "open", 90), health(lab, host)
    assert bot_running(lab, host)
