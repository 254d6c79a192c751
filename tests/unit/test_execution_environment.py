"""execution-environment.yml makes a build context with ansible-builder (`create`: no container engine
needed): the pinned ansible-core line, the system packages the roles use on the controller, the
collection's own tarball and the waops wheel (waops.ops.recover imports its rules) installed into the image.
docs/awx.md's job templates name playbooks the collection has, and its reset workflow has its approval node."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (whl,) = (tmp_path / "dist").glob("waops-*.whl")

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
    assert (ctx / "_build" / "wheels" / whl.name).read_bytes() == whl.read_bytes()
    assert "python3.11 -m pip install --no-cache-dir /tmp/waops-wheels/*.whl" in text
    bindep = (ctx / "_build" / "bindep.txt").read_text()
    for pkg in ("openssh-clients", "tar", "npm"):
        assert pkg in bindep, pkg


def test_awx_doc_names_job_templates_the_collection_has_and_the_reset_approval() -> None:
    doc = (ROOT / "docs" / "awx.md").read_text()
    section = doc.split("## Job templates", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (waops \w+) \| `waops\.ops\.(\w+)` \|", section, re.M)
    assert {name for name, _ in rows} == {"waops site", "waops backup", "waops recover", "waops reset"}, rows
    for _, playbook in rows:
        assert (ROOT / "playbooks" / f"{playbook}.yml").is_file(), playbook
    workflow = doc.split("## The reset workflow", 1)[1]
    assert re.search(r"\[waops backup\].*\[Approval: .*\].*\[waops reset\].*\[waops recover", workflow), workflow
    assert "Approval node" in workflow and "timeout" in workflow and "waops_trigger=operator" in workflow
