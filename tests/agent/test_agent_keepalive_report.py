"""`waops-host keepalive`: the keep-alive socket's two requests, as the socket unit runs them (stdin is the
connection): nothing said is a backup; one JSON line is a connection close the bot reports, which raises
the session incident at once through the check's signed webhook (no `session_down_minutes` hold).

The bot user is the adversary: oversized, malformed, unknown or foreign requests are refused before
anything runs, a silent connection cannot hold the service, and a flood of reports is rate limited.
The real agent runs as a process; the webhook is test_agent_check's stand-in. No bot process runs here,
so the process reads as down (the lab test, tests/lab/test_eda_detect.py, runs it against a real bot)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agent_helpers import AGENT, PYTHON, Bot
from test_agent_check import HOOK_SECRET, StandIn, abot, alerts, standin  # noqa: F401 (fixtures)

from waops_host.report import BURST, MAX_CLOCK_SKEW_S, Refused, admit, parse_request


def request(bot: Bot, data: bytes, close_stdin: bool = True,
            timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    """One connection: `data` on stdin, as the socket unit passes it; (exit code, JSON lines out, stderr)."""
    cmd = [PYTHON, str(AGENT), "keepalive", "--bot", bot.name, "--config-dir", str(bot.cfg_dir), "--lock-dir",
           str(bot.lock_dir), "--state-dir", str(bot.root / "state"), "--prune", "--min-interval", "3600", "--json"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if close_stdin:
        out, err = p.communicate(data, timeout=timeout)
    else:  # the connection stays open, the bot says nothing more: the agent must not wait for it
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        p.stdin.write(data)
        p.stdin.flush()
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(timeout)
        p.stdin.close()
    assert b"Traceback" not in err, err.decode()
    return p.returncode, [json.loads(line) for line in out.decode().splitlines() if line.strip()], err.decode()


def close_line(code: Any = 401, **extra: Any) -> bytes:
    return json.dumps({"close": {"code": code, "at": datetime.now(UTC).isoformat(), **extra}}).encode() + b"\n"


@pytest.fixture
def held(abot: Bot) -> Bot:  # noqa: F811
    """The session condition as shipped: an incident only after 10 minutes of a session not open."""
    alerts(abot, session_down_minutes=10)
    (abot.auth.parent / "health.json").write_text(json.dumps(
        {"schema": 1, "connection": "close", "last_disconnect": {"code": 401, "reason": "device_removed"},
         "updated_at": datetime.now(UTC).isoformat()}))
    return abot


def test_a_reported_close_raises_the_session_event_at_once_in_the_rulebooks_shape(
        held: Bot, standin: StandIn) -> None:  # noqa: F811
    rc, (answer,), _ = request(held, close_line(401))
    assert rc == 0 and answer == {"command": "report", "ok": True, "active": ["session_down"]}
    (req,) = [r for r in standin.requests if r["kind"] == "webhook"]
    hook = req["body"]
    # what extensions/eda/rulebooks/waops_recover.yml matches, and what its run_playbook passes on
    assert hook["event"] == "open" and hook["condition"] == "session_down" and hook["bot"] == "shop"
    assert hook["host"] and hook["started_at"] and hook["id"] and hook["severity"] == "critical"
    assert hook["details"]["reported_close"]["code"] == 401
    stamp = req["headers"]["X-Waops-Timestamp"]
    mac = hmac.new(HOOK_SECRET.encode(), stamp.encode() + b"." + req["raw"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Waops-Signature"] == f"sha256={mac}"
    # the same incident is not announced again by the next report or the next quick check
    request(held, close_line(401))
    held.run("check", "--quick", "--state-dir", str(held.root / "state"), "--metrics-file", "", check=False)
    assert len([r for r in standin.requests if r["kind"] == "webhook"]) == 1


def test_without_a_report_the_quick_check_keeps_the_hold(held: Bot, standin: StandIn) -> None:  # noqa: F811
    p = held.run("check", "--quick", "--json", "--state-dir", str(held.root / "state"), "--metrics-file", "")
    (r,) = json.loads(p.stdout)["results"]
    assert r["active"] == [] and "session_down" in r["conditions"] and standin.requests == []


def test_saying_nothing_is_a_backup_request(held: Bot, standin: StandIn) -> None:  # noqa: F811
    rc, (doc,), _ = request(held, b"")
    assert rc == 0 and doc["command"] == "backup" and doc["results"][0]["verified"] is True
    rc, (again,), _ = request(held, b"")  # the bot's hourly limit: the same backup, not a new one
    assert again["results"][0]["skipped"] is True and again["results"][0]["id"] == doc["results"][0]["id"]
    assert standin.requests == []


def test_a_silent_connection_cannot_hold_the_service(held: Bot) -> None:
    started = time.monotonic()
    rc, (doc,), _ = request(held, b"", close_stdin=False)
    assert rc == 0 and doc["command"] == "backup" and time.monotonic() - started < 30


HOSTILE = {
    "too long": close_line(401, pad="x" * 600),
    "not JSON": b"close 401\n",
    "not UTF-8": b'{"close": {"code": 401, "at": "\xff"}}\n',
    "a list": b"[1, 2]\n",
    "another bot": json.dumps({"close": {"code": 401}, "bot": "other"}).encode() + b"\n",
    "a path": json.dumps({"close": {"code": 401, "health_file": "/etc/shadow"}}).encode() + b"\n",
    "code as text": close_line("401"),
    "code as bool": close_line(True),
    "code out of range": close_line(10**12),
    "time not ISO": json.dumps({"close": {"code": 401, "at": "yesterday"}}).encode() + b"\n",
    "deep nesting": b"[" * 500 + b"\n",
    "unknown request": json.dumps({"backup": {"reason": "pre-reset"}}).encode() + b"\n",
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_hostile_requests_are_refused_before_anything_runs(held: Bot, standin: StandIn, what: str) -> None:  # noqa: F811
    rc, (answer,), err = request(held, HOSTILE[what])
    assert rc == 2 and answer["ok"] is False and answer["error"], answer
    assert "refused" in err
    assert standin.requests == [] and not (held.root / "state").exists() and not held.backups.exists()


def test_a_flood_of_reports_is_rate_limited(held: Bot, standin: StandIn) -> None:  # noqa: F811
    health = held.auth.parent / "health.json"  # stopped: no reconnect grace, the flood comes back to back
    health.write_text(json.dumps({**json.loads(health.read_text()), "connection": "stopped"}))
    answers = [request(held, close_line(440))[1][0] for _ in range(BURST + 3)]
    assert [a["ok"] for a in answers] == [True] * BURST + [False] * 3
    assert {a.get("error") for a in answers[BURST:]} == {"rate limited"}
    assert len([r for r in standin.requests if r["kind"] == "webhook"]) == 1  # one incident, announced once


def test_parse_keeps_only_a_bounded_close() -> None:
    now = time.time()
    assert parse_request(b"", now) is None and parse_request(b"  \n", now) is None
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    got = parse_request(json.dumps({"close": {"code": None, "at": old}}).encode(), now)
    assert got is not None and got["code"] is None
    assert abs(datetime.fromisoformat(got["at"].replace("Z", "+00:00")).timestamp() - (now - MAX_CLOCK_SKEW_S)) < 2
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    got = parse_request(json.dumps({"close": {"code": 515, "at": future}}).encode(), now)
    assert got is not None and datetime.fromisoformat(got["at"].replace("Z", "+00:00")).timestamp() <= now + 1
    with pytest.raises(Refused):
        parse_request(b'{"close": {"code": -1}}', now)


def test_the_bucket_refills_and_counts_closes_for_flapping() -> None:
    state: dict[str, Any] = {}
    taken = [admit(state, 1000.0 + i)[0] for i in range(BURST + 1)]
    assert taken == [True] * BURST + [False]
    assert admit(state, 1000.0 + BURST + 60)[0] is True  # refilled
    assert admit({"closes": [990.0, 995.0]}, 1000.0)[1] == 3
    assert admit({"closes": [1.0], "tokens": "x", "at": 1e12}, 1000.0) == (True, 1)  # junk state is no crash


def decrypt_line(failures: Any = 12, **extra: Any) -> bytes:
    doc = {"decrypt": {"failures": failures, "at": datetime.now(UTC).isoformat(), **extra}}
    return json.dumps(doc).encode() + b"\n"


def test_a_decrypt_report_is_taken_and_runs_the_quick_check(held: Bot, standin: StandIn) -> None:  # noqa: F811
    """A Bad MAC flood keeps the connection open: the agent's count is the only word of it. Taken, it runs
    the quick check at once; with no bot process here the flood opens nothing (the lab test runs a bot)."""
    rc, (answer,), err = request(held, decrypt_line(12))
    assert rc == 0 and answer["command"] == "report" and answer["ok"] is True, (answer, err)
    assert "decrypt failures reported (12)" in err
    assert "decrypt_flood" not in answer["active"]  # the process reads as down: nothing to prune for
    state = json.loads((held.lock_dir / "waops-shop.reports.json").read_text())
    assert state["closes"] == []  # a decrypt report is no close: it never makes a bot look flapping


DECRYPT_HOSTILE = {
    "failures as text": decrypt_line("12"),
    "failures as bool": decrypt_line(True),
    "failures as float": decrypt_line(12.0),
    "no failures": decrypt_line(0),
    "failures out of range": decrypt_line(10**12),
    "failures missing": json.dumps({"decrypt": {"at": datetime.now(UTC).isoformat()}}).encode() + b"\n",
    "a reason": decrypt_line(12, reason="x" * 100),
    "a path": decrypt_line(12, health_file="/etc/shadow"),
    "both kinds": json.dumps({"decrypt": {"failures": 12}, "close": {"code": 401}}).encode() + b"\n",
    "not an object": json.dumps({"decrypt": [12]}).encode() + b"\n",
    "time not ISO": json.dumps({"decrypt": {"failures": 12, "at": "now"}}).encode() + b"\n",
}


@pytest.mark.parametrize("what", list(DECRYPT_HOSTILE))
def test_hostile_decrypt_reports_are_refused_before_anything_runs(
        held: Bot, standin: StandIn, what: str) -> None:  # noqa: F811
    rc, (answer,), err = request(held, DECRYPT_HOSTILE[what])
    assert rc == 2 and answer["ok"] is False and answer["error"], answer
    assert "refused" in err
    assert standin.requests == [] and not (held.root / "state").exists()


def test_parse_keeps_only_a_bounded_decrypt_report() -> None:
    now = time.time()
    got = parse_request(decrypt_line(12), now)
    assert got is not None and got["kind"] == "decrypt" and got["failures"] == 12
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    got = parse_request(json.dumps({"decrypt": {"failures": 1, "at": future}}).encode(), now)
    assert got is not None and datetime.fromisoformat(got["at"].replace("Z", "+00:00")).timestamp() <= now + 1
    close = parse_request(close_line(440), now)
    assert close is not None and close["kind"] == "close" and close["code"] == 440


def test_decrypt_reports_draw_on_the_bucket_but_are_no_closes() -> None:
    state: dict[str, Any] = {"closes": [995.0]}
    assert admit(state, 1000.0, close=False) == (True, 1)
    taken = [admit(state, 1001.0 + i, close=False)[0] for i in range(BURST)]
    assert taken == [True] * (BURST - 1) + [False]


def test_the_flood_condition_takes_the_health_file_count_only_in_bounds() -> None:
    """The bot writes `decrypt_failures`: a count of another type, out of range or of another window is no
    flood, its reason is shown short and printable, and a flood needs the process running."""
    from waops_host.checkconf import DECRYPT_FLOOD, DECRYPT_WINDOW_S
    from waops_host.conditions import decrypt_flood

    now = datetime.now(UTC)

    def health(**df: Any) -> dict[str, Any]:
        return {"decrypt_failures": {"count": 12, "last_reason": "Bad MAC", "last_at": now.isoformat(), **df}}

    flood = decrypt_flood(health(), True, now)
    assert flood.active and flood.level == 2 and "12 messages failed to decrypt" in flood.summary
    assert "Bad MAC" in flood.summary
    assert not decrypt_flood(health(), False, now).active  # process down: session_down's business
    assert not decrypt_flood(health(count=DECRYPT_FLOOD - 1), True, now).active
    old = (now - timedelta(seconds=DECRYPT_WINDOW_S + 60)).isoformat()
    future = (now + timedelta(hours=1)).isoformat()
    for bad in ({"count": "12"}, {"count": True}, {"count": 10**9}, {"count": -1}, {"last_at": old},
                {"last_at": future}, {"last_at": None}, {"last_at": 5}):
        assert not decrypt_flood(health(**bad), True, now).active, bad
    for junk in ({"decrypt_failures": [12]}, {"decrypt_failures": "12"}, {}):
        assert not decrypt_flood(junk, True, now).active
    shown = decrypt_flood(health(last_reason="Bad\x1b[31m MAC\n" + "x" * 500), True, now).summary
    assert "\x1b" not in shown and "\n" not in shown and "x" * 61 not in shown
    # the count the agent just reported counts too (the health file may be a moment behind)
    assert decrypt_flood({}, True, now, reported=DECRYPT_FLOOD).active
