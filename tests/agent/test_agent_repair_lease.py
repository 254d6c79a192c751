"""The repair lease on the bot's host: one holder from the stop to the verify, seen by backup, the
destructive commands and the check; a holder that stops renewing loses it."""

from __future__ import annotations

import json
import stat
import time
from typing import Any

from agent_helpers import Bot, snapshot
from test_agent_check import StandIn, abot, alerts, at, check, standin  # noqa: F401 - fixtures


def lease(bot: Bot, action: str, owner: str, *extra: str, expect: int = 0) -> dict[str, Any]:
    p = bot.run("repair", action, "--owner", owner, *extra, "--json")
    assert p.returncode == expect, f"repair {action}: exit {p.returncode}: {p.stdout} {p.stderr}"
    assert "Traceback" not in p.stderr
    (r,) = json.loads(p.stdout)["results"]
    return r


def test_one_holder_the_other_is_told_who_with_exit_75(bot: Bot) -> None:
    first = lease(bot, "begin", "alice@laptop:1")
    assert first["held"] and first["owner"] == "alice@laptop:1"
    path = bot.lock_dir / "shop.repair.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = lease(bot, "begin", "bob@desk:2", expect=75)
    assert not other["ok"]
    assert "another repair is running on" in other["error"]
    assert "owner alice@laptop:1 since " + first["since"] in other["error"]
    assert lease(bot, "renew", "bob@desk:2", expect=75)["exit_code"] == 75
    assert lease(bot, "end", "bob@desk:2", expect=75)["exit_code"] == 75
    again = lease(bot, "begin", "alice@laptop:1")  # the holder may begin again: same lease
    assert again["since"] == first["since"]
    renewed = lease(bot, "renew", "alice@laptop:1", "--ttl", "600")
    assert renewed["expires_at"] > first["expires_at"]
    assert not lease(bot, "end", "alice@laptop:1")["held"]
    assert not path.exists()
    assert lease(bot, "begin", "bob@desk:2")["held"]


def test_a_holder_that_stops_renewing_loses_the_lease(bot: Bot) -> None:
    lease(bot, "begin", "crashed:1", "--ttl", "1")
    time.sleep(1.5)
    assert lease(bot, "begin", "next:2")["owner"] == "next:2"


def test_backup_skips_during_someone_elses_repair_and_runs_for_its_holder(bot: Bot) -> None:
    lease(bot, "begin", "ctl:1")
    r = bot.json("backup", "--reason", "cron")["results"][0]
    assert r["skipped"] and "owner ctl:1" in r["why"]
    assert bot.listing() == []
    mine = bot.json("backup", "--reason", "manual", "--owner", "ctl:1")["results"][0]
    assert mine["verified"] and not mine.get("skipped")


def test_destructive_commands_refuse_outside_the_lease(bot: Bot) -> None:
    lease(bot, "begin", "ctl:1")
    before = snapshot(bot.auth)
    for cmd in (("reset",), ("restore", "--latest-verified"), ("prune-keys",)):
        p = bot.run(*cmd, "--json")
        assert p.returncode == 75, (cmd, p.stdout, p.stderr)
        assert "owner ctl:1" in json.loads(p.stdout)["results"][0]["error"]
    assert snapshot(bot.auth) == before and bot.listing() == []
    assert bot.json("reset", "--owner", "ctl:1")["results"][0]["ok"]


def test_bad_owner_and_ttl_are_usage_errors(bot: Bot) -> None:
    for args in (("begin", "--owner", "a b"), ("begin", "--owner", "x", "--ttl", "0"), ("begin",)):
        p = bot.run("repair", *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_the_check_holds_session_alerts_while_a_lease_is_held(abot: Bot, standin: StandIn) -> None:  # noqa: F811
    """A reset waiting for a QR scan holds no agent lock, only the lease: the check still sees the repair."""
    alerts(abot, session_down_minutes=10)
    lease(abot, "begin", "ctl:1")
    for t in ("12:00", "12:15"):
        r = check(abot, at(t))
        assert "session_down" not in r["active"] and any("repair running" in e for e in r["events"])
    lease(abot, "end", "ctl:1")
    check(abot, at("12:20"))
    assert "session_down" in check(abot, at("12:35"))["active"]
