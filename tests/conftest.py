"""Shared fixtures: real lab hosts (systemd-nspawn) for the tests marked `lab`.

Every lab a test brings up is torn down in a finalizer, so a failing test leaves nothing behind
(tests/lab/test_lab.py checks that by running a failing test in a child pytest)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Commands the tests start (waops, python -m waops_lab.sandbox, python -m waops_host, ansible through
# runner) import this checkout's waops, host agent and lab too, not another checkout an editable install
# points at.
_REPO = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_REPO / "controller"), str(_REPO / "roles" / "waops_host" / "files"), str(_REPO / "lab"),
                os.environ.get("PYTHONPATH")) if p)


def lab_available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("systemd-nspawn", "debootstrap", "nft"):
        if not shutil.which(tool):
            return f"{tool} is not installed (see .ci/run)"
    return None


def _lab(name: str):
    from waops_lab.lab import Lab, LabSettings

    base = LabSettings.from_env()
    # WAOPS_LAB_TAG (a few of a-z0-9) ends every test lab's name, so two checkouts can run the same
    # lab tests side by side without sharing a lab.
    tag = os.environ.get("WAOPS_LAB_TAG", "")
    if tag:
        name = name[: 12 - len(tag)] + tag
    return Lab(LabSettings(name=name, cache_dir=base.cache_dir, runtime_root=base.runtime_root))


@pytest.fixture
def lab_factory() -> Iterator:
    """Bring up labs by name inside a test; every one is removed afterwards, pass or fail."""
    why = lab_available()
    if why:
        pytest.skip(why)
    made = []

    def make(name: str, hosts: int = 1, managers: tuple[str, ...] = ("pm2", "systemd")):
        lab = _lab(name)
        made.append(lab)
        lab.up(hosts, managers, log=lambda _m: None)
        return lab

    yield make
    for lab in made:
        lab.down(log=lambda _m: None)
