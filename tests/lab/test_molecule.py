"""Each role's molecule scenario, as a maintainer runs it: `molecule test -s <role>` on its own lab host
(check mode on the new host, converge, idempotence, check mode again, verify, destroy)."""

from __future__ import annotations

import os
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


def test_scenarios_name_roles_by_their_collection_fqcn() -> None:
    import yaml

    for play_file in sorted((ROOT / "molecule").glob("*/*.yml")):
        for play in yaml.safe_load(play_file.read_text()) or []:
            if not isinstance(play, dict):
                continue
            for entry in play.get("roles") or []:
                role = entry["role"] if isinstance(entry, dict) else entry
                assert role.startswith("waops.ops."), f"{play_file}: role {role} is not named by its FQCN"


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
    name = scenario.replace("waops_", "mol-") + os.environ.get("WAOPS_LAB_TAG", "")  # molecule.yml's lab name
    lab = subprocess.run([sys.executable, "-m", "waops", "lab", "status", "--name", name],
                         capture_output=True, text=True, timeout=60)
    assert "no hosts" in lab.stdout + lab.stderr, lab.stdout
