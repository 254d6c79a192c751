"""The CLI's application object: global options before or after the command, no default inventory (exit 2
naming the three places), waops.toml where it is defined, exit codes from one table, the round-trip hook,
and commands other distributions register."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from waops.cli import EPILOG, cli
from waops.errors import MEANING, ExitCode
from waops.recover import RecoverResult, fleet_exit_code
from waops.verify import command_round_trip


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAOPS_") and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(tmp / "home"), XDG_STATE_HOME=str(tmp / "state"), NO_COLOR="1", COLUMNS="200")
    env.update(extra)
    return env


def waops(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", *args], cwd=tmp,
                          env=_env(tmp, **env), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["diagnose", "--all"],
    ["recover", "--all", "--dry-run"],
    ["qr", "bot-1"],
    ["provision"],
    ["migrate", "bot-1", "--bot", "shop", "--to", "sqlite"],
    ["move", "shop", "--to", "bot-2"],
])
def test_no_inventory_exits_2_and_names_the_three_places(tmp_path: Path, args: list[str]) -> None:
    p = waops(tmp_path, *args)
    assert p.returncode == ExitCode.USAGE, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("waops: error:")]
    assert "-i/--inventory" in line and "WAOPS_INVENTORY" in line, line
    # both waops.toml files, by their real paths
    assert str(tmp_path / "home" / ".config" / "waops" / "waops.toml") in line, line
    assert str(tmp_path / "waops.toml") in line, line
    assert "Traceback" not in p.stderr


def _inventory(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("all:\n  hosts:\n    h1: {ansible_host: 192.0.2.10, waops_bots: [{name: shop}]}\n")
    return path


def test_waops_toml_in_the_current_directory_and_in_the_home_config(tmp_path: Path) -> None:
    # ~/.config/waops/waops.toml, its relative path taken from the file's own directory
    home_cfg = tmp_path / "home" / ".config" / "waops"
    _inventory(home_cfg / "fleet" / "hosts.yml")
    home_cfg.joinpath("waops.toml").write_text('inventory = "fleet/hosts.yml"\n')
    p = waops(tmp_path, "diagnose", "--show-settings")
    assert p.returncode == 0, p.stderr
    assert f"inventory = '{home_cfg / 'fleet' / 'hosts.yml'}'  ({home_cfg / 'waops.toml'})" in p.stdout, p.stdout
    # ./waops.toml wins over the home one
    _inventory(tmp_path / "here.yml")
    (tmp_path / "waops.toml").write_text('[waops]\ninventory = "here.yml"\n')
    p = waops(tmp_path, "diagnose", "--show-settings")
    assert f"inventory = '{tmp_path / 'here.yml'}'  ({tmp_path / 'waops.toml'})" in p.stdout, p.stdout
    # WAOPS_INVENTORY over both, -i over everything
    p = waops(tmp_path, "diagnose", "--show-settings", WAOPS_INVENTORY="env.yml")
    assert "inventory = 'env.yml'  (env WAOPS_INVENTORY)" in p.stdout, p.stdout
    p = waops(tmp_path, "-i", "flag.yml", "diagnose", "--show-settings", WAOPS_INVENTORY="env.yml")
    assert "inventory = 'flag.yml'  (flag)" in p.stdout, p.stdout


def test_global_options_before_or_after_the_command(tmp_path: Path) -> None:
    inv = str(_inventory(tmp_path / "hosts.yml"))
    env = _env(tmp_path)
    before = CliRunner().invoke(cli, ["-i", inv, "--timeout", "7", "-o", "json", "diagnose", "--show-settings"],
                                env=env)
    after = CliRunner().invoke(cli, ["diagnose", "--show-settings", "-i", inv, "--timeout", "7", "--output", "json"],
                               env=env)
    assert before.exit_code == after.exit_code == 0, before.output + after.output
    for r in (before, after):
        assert f"inventory = '{inv}'  (flag)" in r.output and "timeout = 7.0  (flag)" in r.output
        assert "output = 'json'  (flag)" in r.output
    # the value after the command wins over the one before it
    both = CliRunner().invoke(cli, ["--timeout", "7", "diagnose", "--show-settings", "--timeout", "9"], env=env)
    assert "timeout = 9.0  (flag)" in both.output


def test_global_store_before_the_command(tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    r = CliRunner().invoke(cli, ["--store", db, "-o", "json", "incidents", "list"], env=_env(tmp_path))
    assert r.exit_code == 0 and json.loads(r.stdout) == [], r.output
    assert Path(db).exists()
    r = CliRunner().invoke(cli, ["-o", "json", "mttr", "report"], env=_env(tmp_path, WAOPS_STORE=db))
    assert r.exit_code == 0 and json.loads(r.stdout)["causes"][0]["incidents"] == 0, r.output


def test_every_exit_code_is_in_the_one_table_and_in_the_help() -> None:
    assert set(MEANING) == set(ExitCode)
    for code in ExitCode:
        assert f"  {int(code):<3} {MEANING[code]}" in EPILOG
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "75" in r.output and "130" in r.output


def test_fleet_exit_code() -> None:
    def res(outcome: str, **kw: bool) -> RecoverResult:
        return RecoverResult("h", "b", outcome, "", **kw)

    assert fleet_exit_code([res("failed", busy=True), res("failed", busy=True)]) == ExitCode.BUSY
    assert fleet_exit_code([res("failed", busy=True), res("resolved")]) == ExitCode.PROBLEM
    assert fleet_exit_code([res("needs_human"), res("resolved")]) == ExitCode.NEEDS_HUMAN
    assert fleet_exit_code([res("needs_human"), res("unreachable")]) == ExitCode.UNREACHABLE
    assert fleet_exit_code([res("resolved"), res("healthy")]) == ExitCode.OK
    assert fleet_exit_code([res("resolved", cancelled=True)]) == ExitCode.INTERRUPTED


def test_round_trip_hook_runs_the_command_with_the_bot_in_its_environment(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('WAOPS_')}}, open({str(seen)!r}, 'w'))\n"
        "print('sent'); print('test message answered: ok')\n"
        "sys.exit(0 if os.environ['WAOPS_BOT_PHONE'] == '15550100001' else 1)\n")
    hook = f"{sys.executable} {script} --flag 'two words'"
    rt = command_round_trip(hook, host="bot-1", bot="shop", phone="15550100001")
    assert rt is not None
    assert rt(5) == (True, "test message answered: ok")
    env = json.loads(seen.read_text())
    assert env["WAOPS_HOST"] == "bot-1" and env["WAOPS_BOT"] == "shop" and env["WAOPS_ROUNDTRIP_TIMEOUT"] == "5"
    ok, detail = command_round_trip(hook, host="bot-1", bot="shop", phone="15550100002")(5)  # type: ignore[misc]
    assert not ok and detail.startswith("round trip failed: ")
    ok, detail = command_round_trip("/nonexistent/hook", host="h", bot="b", phone="1")(5)  # type: ignore[misc]
    assert not ok and "cannot run" in detail
    # off by default, and when the inventory says off; no phone, nothing to send to
    for off in (None, "", "off", "OFF"):
        assert command_round_trip(off, host="h", bot="b", phone="1") is None
    assert command_round_trip(hook, host="h", bot="b", phone=None) is None


def test_lab_commands_come_from_the_entry_point_group() -> None:
    import importlib.metadata

    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="waops.commands")}
    if "lab" not in eps:
        pytest.skip("waops-lab is not installed (pip install -e lab)")
    assert eps["lab"] == "waops_lab.cli.lab:lab" and eps["demo"] == "waops_lab.cli.demo:demo"
    r = CliRunner().invoke(cli, ["--help"])
    assert "lab " in r.output and "demo " in r.output
    r = CliRunner().invoke(cli, ["lab", "--help"])
    assert r.exit_code == 0 and "up" in r.output and "fault" in r.output
