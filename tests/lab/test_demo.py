"""The README's first command, `waops demo`, end to end on this machine, as a person would type it.

It runs `waops demo` as a subprocess (the console script when it is on PATH, else `python -m waops`):
lab up, provision, the simulator logs the bot out, diagnose, recover with a new link and a test
message, the MTTR report, lab down. The test checks the exit status, that the report and the recovered
cause are in what the command printed, and that nothing is left: no lab (directory, bridge, mounts,
processes) and nothing in the state directory. When the machine's Node.js is NodeSource's package (as
on CI's machines) the test says which, so the log shows the demo ran beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lab_available

pytestmark = [pytest.mark.lab]


def _nodejs_package() -> str | None:
    """`nodejs <version>` of the installed Debian package, or None when there is none."""
    if not shutil.which("dpkg-query"):
        return None
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "nodejs"], capture_output=True,
                       text=True, check=False)
    parts = p.stdout.split()
    return f"nodejs {parts[-1]}" if p.returncode == 0 and "installed" in parts[:3] else None


def test_readme_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    why = lab_available()
    if why:
        pytest.skip(why)
    from waops_lab.lab import Lab, LabSettings

    tag = os.environ.get("WAOPS_LAB_TAG", "")
    name = ("demo-" + tag)[:12] if tag else "demo-t"
    lab = Lab(LabSettings.from_env(name))
    assert not lab.leftovers(), f"a lab named {name} exists already: {lab.leftovers()}"

    node = _nodejs_package()
    if node and "nodesource" in node:
        # NodeSource's nodejs carries npm and conflicts with Debian's npm: the demo must work beside it.
        npm = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "npm"], capture_output=True, text=True,
                             check=False)
        assert "install ok installed" not in npm.stdout, "Debian's npm beside NodeSource's nodejs"
        with capsys.disabled():
            print(f"\n    waops demo on a NodeSource machine: {node}, node {_node_version()}")

    state = tmp_path / "state"
    # COLUMNS: rich draws its tables this wide when not on a terminal, so no word of the report is wrapped
    env = {k: v for k, v in os.environ.items() if k != "WAOPS_DEMO_STORE"} | {"XDG_STATE_HOME": str(state),
                                                                             "COLUMNS": "200"}
    waops = shutil.which("waops")
    argv = [waops] if waops else [sys.executable, "-m", "waops"]
    try:
        p = subprocess.run([*argv, "demo", "--name", name], env=env, capture_output=True, text=True,
                           timeout=1500, check=False)
    finally:
        left = lab.leftovers()
        if left:
            lab.down(log=lambda _m: None)  # the demo should have: clean up for the next run, then fail below
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "MTTR" in out and "logged_out" in out, out[-4000:]
    assert "resolved" in out, out[-4000:]
    assert not left, f"waops demo left {left}"
    assert not state.exists() or not any(state.rglob("*")), sorted(map(str, state.rglob("*")))


def _node_version() -> str:
    node = shutil.which("node")
    if not node:
        return "none"
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
