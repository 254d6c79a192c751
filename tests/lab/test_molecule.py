"""Each role's molecule scenario, as a maintainer runs it: `molecule test -s <role>` on its own lab host
(check mode on the new host, converge, idempotence, check mode again, verify, destroy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_every_role_has_a_scenario() -> None:
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
    assert roles == SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    from tests.conftest import lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    molecule = shutil.which("molecule") or str(Path(sys.executable).with_name("molecule"))
    proc = subprocess.run([molecule, "test", "-s", scenario], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "idempotence" in out.lower()
    lab = subprocess.run([sys.executable, "-m", "waops", "lab", "status", "--name", scenario.replace("waops_", "mol-")],
                         capture_output=True, text=True, timeout=60)
    assert "no hosts" in lab.stdout + lab.stderr, lab.stdout
