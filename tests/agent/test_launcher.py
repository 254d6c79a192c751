"""The `waops-host` launcher: three statements on an isolated Python path, so root never imports anything
from a directory the bot user (or its environment) can point at."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest
from agent_helpers import AGENT


def test_the_launcher_only_puts_the_root_owned_package_first() -> None:
    text = AGENT.read_text()
    assert text.splitlines()[0] == "#!/usr/bin/python3 -IS"  # no PYTHONPATH, user site, script dir, site
    body = [n for n in ast.parse(text).body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert [type(n).__name__ for n in body] == ["Import", "Expr", "ImportFrom", "Expr"]
    assert "sys.path.insert(0, '/usr/local/lib/waops-host')" in ast.unparse(body[1])


@pytest.mark.skipif(os.path.exists("/usr/local/lib/waops-host"), reason="an agent is installed on this machine")
def test_pythonpath_cannot_supply_the_package_to_the_launcher(tmp_path: Path) -> None:
    fake = tmp_path / "waops_host"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "cli.py").write_text("def run():\n    print('planted')\n    return 0\n")
    p = subprocess.run([str(AGENT), "--help"], capture_output=True, text=True, timeout=60, check=False,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert "planted" not in p.stdout and "No module named 'waops_host'" in p.stderr
