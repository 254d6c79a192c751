"""`waops provision`: the inventory is checked before anything runs; exit codes via a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def waops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "waops", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "NO_COLOR": "1"})


def _inventory(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(body)
    return path


def test_malformed_inventory_is_a_usage_error(tmp_path: Path) -> None:
    proc = waops("provision", "-i", str(_inventory(tmp_path, "all: [\n")))
    assert proc.returncode == 2
    assert "malformed inventory" in proc.stderr and "Traceback" not in proc.stderr


def test_no_matching_host_and_host_without_bots_are_usage_errors(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, "all:\n  children:\n    waops_bot_hosts:\n      hosts:\n"
                               "        bot1.example.com:\n          ansible_host: 192.0.2.10\n")
    proc = waops("provision", "-i", str(inv), "nosuchhost")
    assert proc.returncode == 2 and "no host" in proc.stderr
    proc = waops("provision", "-i", str(inv))
    assert proc.returncode == 2 and "bot1.example.com has no waops_bots" in proc.stderr


def test_unreachable_host_exits_3_with_the_host_in_the_recap(tmp_path: Path) -> None:
    # Port 1 on loopback refuses at once: a real SSH failure, no waiting on a timeout.
    inv = _inventory(tmp_path, "all:\n  children:\n    waops_bot_hosts:\n      hosts:\n        bot1.example.com:\n"
                               "          ansible_host: 127.0.0.1\n          ansible_port: 1\n"
                               "          waops_bots: [{name: shop, phone: '15550100001'}]\n")
    proc = waops("provision", "-i", str(inv), "--output", "json")
    assert proc.returncode == 3, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["unreachable"] == ["bot1.example.com"] and not doc["ok"]
    assert doc["failures"] and doc["failures"][0]["unreachable"]
