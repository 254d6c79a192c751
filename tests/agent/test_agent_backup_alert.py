"""A failed scheduled backup alerts on the next check, not when the newest backup is hours old."""

from __future__ import annotations

import json

from agent_helpers import Bot
from test_agent_check import StandIn, abot, at, check, standin  # noqa: F401 - fixtures


def test_a_failed_cron_backup_alerts_at_once_and_clears_on_the_next_good_one(
    abot: Bot, pgbot: Bot, standin: StandIn  # noqa: F811
) -> None:
    abot.write_config(files_warning=1000, files_emergency=2000)  # the 200 test rows are no alert here
    assert check(abot, at("12:00"))["ok"]
    good = json.loads((abot.cfg_dir / "shop.json").read_text())["postgres"]
    abot.write_config(postgres={**good, "port": 1})  # PostgreSQL unreachable at 03:00's backup
    p = abot.run("backup", "--reason", "cron", "--json")
    assert p.returncode == 1 and "PostgreSQL 127.0.0.1:1: " in p.stdout
    r = check(abot, at("12:05"))
    assert r["active"] == ["backup_failed"]
    (hook,) = standin.hooks()
    assert hook["condition"] == "backup_failed" and hook["event"] == "open"
    assert "cron backup at " in hook["text"] and "PostgreSQL 127.0.0.1:1: " in hook["text"]
    assert "Connection refused" in hook["text"]  # psql's whole error, not its last line

    abot.write_config(postgres=good)
    assert abot.json("backup", "--reason", "cron")["results"][0]["verified"]
    assert check(abot, at("12:10"))["ok"]
    assert [h["event"] for h in standin.hooks()] == ["open", "clear"]
