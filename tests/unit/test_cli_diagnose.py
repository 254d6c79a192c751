"""`waops diagnose`: CliRunner for output shapes, subprocess for real exit codes; settings sources."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from waops import config
from waops.cli import cli
from waops.errors import UsageError
from waops.transport import LocalTransport

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "fixtures" / "logs"
AGENT = ROOT / "roles" / "waops_host" / "files" / "waops-host"


def waops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_log_file_exit_codes_via_subprocess() -> None:
    ok = waops("diagnose", "--log-file", str(LOGS / "healthy--none--pino-open.log"), "--output", "json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["results"][0]["cause"] == "healthy"
    bad = waops("diagnose", "--log-file", str(LOGS / "logged_out--401--connection-failure.log"), "--output", "json")
    assert bad.returncode == 1
    row = json.loads(bad.stdout)["results"][0]
    assert {"cause", "code", "evidence", "confidence", "facts"} <= row.keys()
    assert (row["cause"], row["code"]) == ("logged_out", 401)
    missing = waops("diagnose", "--log-file", "/nonexistent/x.log")
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    assert waops("diagnose").returncode == 2


def test_table_goes_to_stderr_and_stdout_stays_empty() -> None:
    r = waops("diagnose", "--log-file", str(LOGS / "conflict--440--stream-conflict-replaced.log"))
    assert r.returncode == 1 and r.stdout == "" and "conflict" in r.stderr


def test_unreachable_host_exit_3_and_malformed_inventory_exit_2(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    inv = tmp_path / "hosts.yml"
    inv.write_text(f"all:\n  hosts:\n    gone: {{ansible_host: 127.0.0.1, ansible_port: {port}, "
                   "waops_bots: [{name: shop}]}\n")
    r = waops("diagnose", "-i", str(inv), "--all", "--output", "json", "--timeout", "5")
    assert r.returncode == 3, r.stderr
    row = json.loads(r.stdout)["results"][0]
    assert row["reachable"] is False and "cannot connect" in row["error"]
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [oops\n")
    r = waops("diagnose", "-i", str(bad), "--all")
    assert r.returncode == 2 and "malformed inventory" in r.stderr and "Traceback" not in r.stderr


def test_hosts_with_a_passed_transport(tmp_path: Path) -> None:
    """The real agent runs locally (LocalTransport) for two inventory hosts, in parallel."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "shop.json").write_text(json.dumps({
        "schema": 1, "name": "shop", "user": "root", "service_manager": "systemd",
        "service_name": "waops-bot-nothere.service", "release_root": str(tmp_path / "rel"),
        "auth_store": "files", "auth_dir": str(tmp_path / "auth"), "health_file": str(tmp_path / "h.json"),
        "backup_dir": str(tmp_path / "bk"), "library_package": "baileys", "expected_library_version": "6.7.18",
        "known_bad_versions": []}))
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    a: {waops_bots: [{name: shop}, {name: ghost}]}\n    b: {}\n")
    env = {"WAOPS_CONFIG_DIR": str(cfg), "PATH": "/usr/bin:/bin"}

    def factory(host, timeout):  # type: ignore[no-untyped-def]
        return LocalTransport(host.name, env=env)

    r = CliRunner().invoke(cli, ["diagnose", "-i", str(inv), "a", "b", "--output", "json", "--bot", "shop"],
                           obj={"transport_factory": factory})
    assert r.exit_code == 1, r.output
    rows = json.loads(r.stdout)["results"]
    assert [(x["host"], x["bot"], x["cause"]) for x in rows] == [("a", "shop", "process_down"),
                                                                 ("b", "shop", "process_down")]
    assert rows[0]["facts"]["process"]["status"] == "missing"


def test_help_documents_exit_codes() -> None:
    r = CliRunner().invoke(cli, ["diagnose", "--help"])
    assert r.exit_code == 0 and "Exit codes" in r.output and "fingerprint" in r.output


def test_settings_precedence_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "waops.toml"
    toml.write_text("[waops]\ntimeout = 12\nconcurrency = 3\nfiles_warning = 150\n")
    env = {"WAOPS_CONFIG": str(toml), "WAOPS_CONCURRENCY": "5"}
    s = config.load({"timeout": None, "output": "json"}, env=env)
    src = {n: (v, o) for n, v, o in s.explain()}
    assert src["timeout"] == (12.0, str(toml))
    assert src["concurrency"] == (5, "env WAOPS_CONCURRENCY")
    assert src["output"] == ("json", "flag")
    assert src["health_fresh_s"][1] == "default"
    assert config.load({"concurrency": 9}, env=env).concurrency == 9
    toml.write_text("nonsense = 1\n")
    with pytest.raises(UsageError, match="unknown setting"):
        config.load(env={"WAOPS_CONFIG": str(toml)})
    toml.write_text("timeout = [\n")
    with pytest.raises(UsageError, match="cannot read"):
        config.load(env={"WAOPS_CONFIG": str(toml)})
    with pytest.raises(UsageError, match="must be of type int"):
        config.load(env={"WAOPS_CONCURRENCY": "many"})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "waops.toml").write_text("bad_mac_flood = 4\n")
    assert config.load(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).bad_mac_flood == 4


def test_show_settings() -> None:
    r = CliRunner().invoke(cli, ["diagnose", "--show-settings", "--timeout", "7"])
    assert r.exit_code == 0 and "timeout = 7.0  (flag)" in r.output
