"""waops_host.versions: the one version ordering, and the newest version worth pinning that pin_library.yml
asks the host for (`python3 -m waops_host.versions`, vendored copies first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from waops_host.versions import known_bad, newest, older_than, version_key


def test_ordering_puts_pre_releases_before_their_release() -> None:
    ordered = ["6.7.9", "6.7.18", "6.17.16", "7.0.0-rc.2", "7.0.0-rc.10", "7.0.0-rc.beta", "7.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert older_than("6.7.18", "7.0.0-rc.1") and not older_than("v7.0.0", "7.0.0") and older_than("junk", "1.0.0")


def test_newest_skips_known_bad_older_and_unpinnable_versions() -> None:
    offered = ["6.7.16", "6.7.18", "6.7.20", "6.17.16", "7.0.0-rc.9", "latest", "v7.1.0"]
    assert newest(offered, "6.7.16", set(known_bad())) == "6.7.18"  # 6.7.20 and 6.17.16 are known bad
    assert newest(offered, "6.7.18", set(known_bad())) == "7.0.0-rc.9"  # only a pre-release is newer
    assert newest(offered, "7.0.0", set()) is None
    assert newest(offered, "not-a-version", {"6.17.16"}) == "6.7.20"


def test_the_module_runs_on_a_host_from_a_release_with_vendored_copies(tmp_path: Path) -> None:
    for v in ("6.7.18", "6.7.19", "7.0.0-rc.5"):
        (tmp_path / "vendor" / f"whiskeysockets-baileys-{v}").mkdir(parents=True)
        (tmp_path / "vendor" / f"whiskeysockets-baileys-{v}" / "package.json").write_text("{}")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "roles" / "waops_host"
                                                         / "files")}
    p = subprocess.run([sys.executable, "-m", "waops_host.versions", str(tmp_path), "@whiskeysockets/baileys",
                        "6.7.18", json.dumps(known_bad())], capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0 and p.stdout == "6.7.19\n", p.stderr
    bad = subprocess.run([sys.executable, "-m", "waops_host.versions", "x"], capture_output=True, text=True, env=env,
                         check=False)
    assert bad.returncode == 2 and "usage" in bad.stderr
