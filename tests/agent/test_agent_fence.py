"""Fencing a bot that moved to another host: the owner record in the bot's restic repository, the boot
gate that reads it, the marker, and what backup and the check do on a fenced host."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from agent_helpers import Bot
from test_agent_offhost import init_repo, use_repo

pytestmark = pytest.mark.skipif(not shutil.which("restic"), reason="restic is not installed")


def check(bot: Bot, tmp_path: Path) -> dict:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    p = bot.run("check", "--json", "--state-dir", str(state), "--metrics-file", "")
    return json.loads(p.stdout)["results"][0]


def test_gate_fences_the_old_host_once_another_owns_the_bot(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    bot.write_config(host="host-a")
    assert bot.backup()["offhost"]["ok"]
    assert bot.run("gate").returncode == 0  # no owner recorded yet: the bot starts
    assert bot.json("offhost", "claim")["results"][0]["owner"] == "host-a"
    assert bot.run("gate").returncode == 0
    # the move records host-b while host-a is down; host-a boots and asks before its bot starts
    bot.json("offhost", "claim", "host-b")
    assert bot.json("offhost", "owner")["results"][0]["owner"] == "host-b"
    p = bot.run("gate", "--json")
    r = json.loads(p.stdout)["results"][0]
    assert p.returncode == 3 and r["allowed"] is False and r["owner"] == "host-b", p.stderr
    marker = json.loads((bot.cfg_dir / "shop.fence").read_text())
    assert marker["owner"] == "host-b" and marker["host"] == "host-a"
    assert oct((bot.cfg_dir / "shop.fence").stat().st_mode & 0o777) == "0o600"
    # fenced: backups of the stale session never reach the shared repository, the check stays quiet
    before = [c["id"] for c in bot.json("offhost", "list")["results"][0]["backups"]]
    skipped = bot.backup()
    assert skipped["skipped"] and "fenced" in skipped["why"]
    assert [c["id"] for c in bot.json("offhost", "list")["results"][0]["backups"]] == before
    facts = json.loads(bot.run("facts", "--json", check=True).stdout)["bots"][0]
    assert facts["fence"]["owner"] == "host-b"
    res = check(bot, tmp_path)
    assert res["active"] == [] and any("fenced: moved to host-b" in e for e in res["events"])
    # still fenced on every later start, whatever the repository says
    assert bot.run("gate").returncode == 3


def test_rollback_unfences_and_reclaims(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    bot.write_config(host="host-a")
    bot.json("offhost", "claim", "host-b")
    assert bot.run("gate").returncode == 3
    bot.json("offhost", "claim", "host-a")
    bot.json("unfence")
    assert not (bot.cfg_dir / "shop.fence").exists()
    assert bot.run("gate").returncode == 0
    assert bot.backup()["offhost"]["ok"]


def test_an_unreachable_repository_never_keeps_the_bot_down(bot: Bot, tmp_path: Path) -> None:
    use_repo(bot, str(tmp_path / "no-repo-here"), tmp_path)
    p = bot.run("gate", "--json")
    assert p.returncode == 0 and "owner unknown" in p.stderr, p.stderr
    bot.write_config(offhost=None)
    assert bot.run("gate").returncode == 0


def test_fence_by_hand_and_bad_owner_name(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    r = bot.json("fence", "--moved-to", "host-b")["results"][0]
    assert r["fenced"] and r["owner"] == "host-b"
    assert bot.run("gate").returncode == 3
    p = bot.run("offhost", "claim", "host b;rm")
    assert p.returncode == 2 and "bad owner name" in p.stderr and "Traceback" not in p.stderr
