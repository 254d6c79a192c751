"""execution-environment.yml makes a build context with ansible-builder (`create`: no container engine
needed): the pinned ansible-core line, the system packages the roles use on the controller, and the
collection's own tarball installed into the image."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_ansible_builder_create_makes_a_context_with_the_collection(tmp_path: Path) -> None:
    builder = shutil.which("ansible-builder")
    if not builder:
        pytest.fail("ansible-builder is not installed: pip install -e '.[eda]'")
    shutil.copy(ROOT / "execution-environment.yml", tmp_path)
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path / "dist"),
                            str(ROOT)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (tarball,) = (tmp_path / "dist").glob("waops-ops-*.tar.gz")

    proc = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", "context"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx = tmp_path / "context"
    (containerfile,) = [p for p in (ctx / "Containerfile", ctx / "Dockerfile") if p.is_file()]
    text = containerfile.read_text()
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert runtime == ">=2.19.0,<2.20.0" and "ansible-core>=2.19,<2.20" in text
    assert "ansible-galaxy collection install --offline -p /usr/share/ansible/collections" in text
    assert (ctx / "_build" / "collections" / tarball.name).read_bytes() == tarball.read_bytes()
    bindep = (ctx / "_build" / "bindep.txt").read_text()
    for pkg in ("openssh-clients", "tar", "npm"):
        assert pkg in bindep, pkg
