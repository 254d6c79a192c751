"""The project's standards, enforced: ruff on the Python, ansible-lint's production profile on the Ansible."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ansible_lint_production_profile_is_clean() -> None:
    lint = shutil.which("ansible-lint") or str(Path(sys.executable).with_name("ansible-lint"))
    if not Path(lint).exists():
        pytest.fail("ansible-lint is not installed: pip install -e '.[dev]'")
    proc = subprocess.run([lint, "--profile", "production", "--nocolor"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    proc = subprocess.run([ruff, "check", "--no-cache", "controller", "lab", "tests", "roles", "molecule",
                           "roles/waops_host/files/waops-host"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
