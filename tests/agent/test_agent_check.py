"""`waops-host check`: alerts to local stand-ins of the Telegram Bot API and of a webhook, and metrics.

The real agent runs as a process (as cron runs it) against a temp bot; the stand-in is a small HTTP
server in a thread that records every request. The clock is moved with the agent's `check --now ISO`
flag (added for testing the clock; nothing else honours it). No bot process runs here (no pm2 daemon for
the bot, no systemd as PID 1), so the process is down: the session condition is off except where a test
wants it. The lab test (tests/lab/test_provision.py) runs the same check against real pm2 and systemd.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AGENT, PYTHON, Bot

ROLE = Path(AGENT).parents[1]
TOKEN = f"{secrets.randbelow(10**9)}:AA{secrets.token_urlsafe(24)}"
CHAT = f"-100{secrets.randbelow(10**12)}"
HOOK_PATH = f"/hook/{secrets.token_hex(12)}"  # chat webhook URLs carry a secret in their path
HOOK_SECRET = secrets.token_urlsafe(18)
SECRETS = (TOKEN, CHAT, HOOK_PATH, HOOK_SECRET)
DAY = datetime(2026, 11, 30, tzinfo=UTC)


def at(hhmm: str, day: int = 0) -> str:
    h, m = map(int, hhmm.split(":"))
    return (DAY + timedelta(days=day, hours=h, minutes=m)).isoformat()


class StandIn:
    """Telegram Bot API (`/bot<token>/sendMessage`) and a webhook, recording what they receive."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.requests: list[dict[str, Any]] = []
        self.telegram_status = 200
        self.agent_pid: int | None = None  # when set, what /proc shows of it while it waits for us
        self.seen_procs: list[bytes] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if standin.agent_pid:
                    for part in ("cmdline", "environ"):
                        standin.seen_procs.append(Path(f"/proc/{standin.agent_pid}/{part}").read_bytes())
                kind = "telegram" if self.path.startswith("/bot") else "webhook" if self.path == HOOK_PATH else "?"
                status = standin.telegram_status if kind == "telegram" else 200 if kind == "webhook" else 404
                standin.requests.append(
                    {
                        "kind": kind,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(body),
                        "raw": body,
                        "status": status,
                    }
                )
                answer = json.dumps({"ok": status == 200, "result": {"message_id": len(standin.requests)}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """The channel goes away: connections are refused, as when the network or the API is down."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def telegram(self) -> list[str]:
        """Texts Telegram accepted (a request answered with an error was not delivered)."""
        return [r["body"]["text"] for r in self.requests if r["kind"] == "telegram" and r["status"] == 200]

    def hooks(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["kind"] == "webhook"]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    s = StandIn()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def abot(bot: Bot, tmp_path: Path, standin: StandIn) -> Bot:
    """The conftest bot (34 auth files) with both channels pointed at the stand-in."""
    secrets_file = tmp_path / "alerts.json"
    secrets_file.write_text(
        json.dumps(
            {
                "telegram": {"token": TOKEN, "chat_id": CHAT},
                "webhook": {"url": f"http://127.0.0.1:{standin.port}{HOOK_PATH}", "secret": HOOK_SECRET},
            }
        )
    )
    secrets_file.chmod(0o600)
    bot.write_config(
        files_warning=40,
        files_emergency=60,
        alerts={
            "channels": ["telegram", "webhook"],
            "secrets_file": str(secrets_file),
            "telegram_api": f"http://127.0.0.1:{standin.port}",
            "timeout_s": 3,
            "quiet_hours": "01:00-06:00",
            "tz": "UTC",
            "session_down_minutes": 0,
            "backup_max_age_hours": 0,
        },
    )  # no process manager or backups here
    return bot


def alerts(bot: Bot, **changes: Any) -> None:
    bot.write_config(alerts={**bot.config["alerts"], **changes})


def check_argv(bot: Bot, now: str) -> list[str]:
    """The whole command line of a check run (for tests that start it themselves, to watch it run)."""
    return [PYTHON, str(AGENT), "check", "--bot", bot.name, "--config-dir", str(bot.cfg_dir), "--lock-dir",
            str(bot.lock_dir), "--state-dir", str(bot.root / "state"), "--metrics-file",
            str(bot.root / "metrics" / "waops.prom"), "--now", now]


def run_check(bot: Bot, now: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The agent as cron runs it, with the clock at `now`; state and metrics inside the test's tmp dir."""
    state, metrics = str(bot.root / "state"), str(bot.root / "metrics" / "waops.prom")
    return bot.run("check", "--now", now, "--state-dir", state, "--metrics-file", metrics, *extra, timeout=30)


def check(bot: Bot, now: str, expect: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    p = run_check(bot, now, "--json")
    assert p.returncode in expect, f"exit {p.returncode}: {p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    (r,) = json.loads(p.stdout)["results"]
    return r


def auth_files(bot: Bot, n: int) -> None:
    """Grow or shrink the auth folder to n files with pre-keys, as a leaking bot does."""
    have = sorted(bot.auth.glob("pre-key-*.json"), key=lambda p: int(p.stem.split("-")[-1]))
    extra = n - len(list(bot.auth.iterdir()))
    for i in range(extra):
        (bot.auth / f"pre-key-{1000 + len(have) + i}.json").write_text('{"id": 1}')
    for p in have[::-1][: max(0, -extra)]:
        p.unlink()
    assert len(list(bot.auth.iterdir())) == n


def test_one_alert_per_incident_one_escalation_one_recovery(abot: Bot, standin: StandIn) -> None:
    assert check(abot, at("12:00"))["ok"] and standin.requests == []
    auth_files(abot, 45)
    r = check(abot, at("12:05"))
    assert r["active"] == ["auth_files"] and r["outbox"] == []
    check(abot, at("12:10"))
    assert len(standin.telegram()) == 1 and len(standin.hooks()) == 1  # no repeat on the next run
    auth_files(abot, 65)  # past the emergency threshold: the same incident, escalated once
    check(abot, at("12:20"))
    check(abot, at("12:25"))
    auth_files(abot, 34)
    assert check(abot, at("12:30"))["ok"]
    check(abot, at("12:35"))

    texts, hooks = standin.telegram(), standin.hooks()
    assert [h["event"] for h in hooks] == ["open", "escalate", "clear"]
    assert [h["severity"] for h in hooks] == ["warning", "critical", "resolved"]
    assert len({h["incident"] for h in hooks}) == 1 and {h["condition"] for h in hooks} == {"auth_files"}
    assert hooks[0]["bot"] == "shop" and hooks[0]["details"] == {"count": 45}
    assert texts[0].startswith("[waops] WARNING shop@") and "45 auth files" in texts[0]
    assert texts[1].startswith("[waops] CRITICAL shop@") and "65 auth files" in texts[1]
    assert texts[2].startswith("[waops] RESOLVED shop@") and "lasted 25 min" in texts[2]
    for req in standin.requests:
        if req["kind"] == "telegram":
            assert req["path"] == f"/bot{TOKEN}/sendMessage" and req["body"]["chat_id"] == CHAT
        else:
            assert req["headers"]["X-Waops-Secret"] == HOOK_SECRET
            # signed (HMAC-SHA256 over "<time>.<body>" with the webhook secret), as the EDA source checks it
            stamp = req["headers"]["X-Waops-Timestamp"]
            mac = hmac.new(HOOK_SECRET.encode(), stamp.encode() + b"." + req["raw"], hashlib.sha256).hexdigest()
            assert req["headers"]["X-Waops-Signature"] == f"sha256={mac}"


def test_quiet_hours_defer_non_critical_alerts_critical_ones_go_at_once(abot: Bot, standin: StandIn) -> None:
    alerts(abot, quiet_hours="02:00-07:00", tz="Europe/Berlin")  # 01:00-06:00 UTC in winter
    auth_files(abot, 45)
    r = check(abot, at("02:30"))
    assert r["quiet_hours"] and r["active"] == ["auth_files"] and len(r["outbox"]) == 1
    check(abot, at("05:55"))
    assert standin.requests == []
    check(abot, at("06:00"))  # 07:00 in Berlin: quiet hours are over
    assert [h["event"] for h in standin.hooks()] == ["open"] and len(standin.telegram()) == 1
    auth_files(abot, 34)
    check(abot, at("06:05"))
    assert [h["event"] for h in standin.hooks()] == ["open", "clear"]

    # Next night: opens and clears unannounced inside quiet hours -> never sent, not even later.
    auth_files(abot, 45)
    check(abot, at("02:00", day=1))
    auth_files(abot, 34)
    check(abot, at("03:00", day=1))
    assert check(abot, at("06:30", day=1))["outbox"] == []
    assert len(standin.hooks()) == 2

    # A critical incident (emergency threshold) goes out at once, inside quiet hours, and so does its clear.
    auth_files(abot, 65)
    check(abot, at("03:30", day=1))
    auth_files(abot, 34)
    check(abot, at("03:35", day=1))
    assert [(h["event"], h["severity"]) for h in standin.hooks()[2:]] == [("open", "critical"), ("clear", "resolved")]
    assert len(standin.telegram()) == 4


def test_channel_down_then_delivered_later_in_order(abot: Bot, standin: StandIn) -> None:
    standin.stop()
    auth_files(abot, 45)
    r = check(abot, at("12:00"))
    assert [m["pending"] for m in r["outbox"]] == [["telegram", "webhook"]]
    assert any("telegram failed, retry next run" in e for e in r["events"])
    auth_files(abot, 34)
    r = check(abot, at("12:05"))  # the clear joins the open in the outbox, never lost
    assert [m["event"] for m in r["outbox"]] == ["open", "clear"]
    standin.start()
    assert check(abot, at("12:10"))["outbox"] == []
    check(abot, at("12:15"))
    assert [h["event"] for h in standin.hooks()] == ["open", "clear"]
    assert [t.split()[1] for t in standin.telegram()] == ["WARNING", "RESOLVED"]

    # One channel failing (HTTP 502) is retried alone; the other is not sent twice.
    standin.telegram_status = 502
    auth_files(abot, 45)
    r = check(abot, at("12:20"))
    assert [m["pending"] for m in r["outbox"]] == [["telegram"]] and len(standin.hooks()) == 3
    standin.telegram_status = 200
    check(abot, at("12:25"))
    check(abot, at("12:30"))
    assert len(standin.hooks()) == 3
    assert [t.split()[1] for t in standin.telegram()] == ["WARNING", "RESOLVED", "WARNING"]


def test_secrets_never_in_argv_environment_output_or_state(abot: Bot, standin: StandIn) -> None:
    # The cron line the role installs carries no secret: only the agent, the bot and paths.
    task = (ROLE / "tasks" / "bot.yml").read_text()
    job = re.search(r'name: "waops check.*?job: >-\n(.*?)(?:\n\n|\Z)', task, re.S)
    assert job and "check --bot" in job[1]
    assert not re.search(r"token|secret|chat|webhook|vault|password", job[1], re.I), job[1]

    # While the agent waits for the stand-in, its argv and environment hold none of the secrets.
    auth_files(abot, 45)
    cmd = check_argv(abot, at("12:00"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    standin.agent_pid = proc.pid
    out, err = proc.communicate(timeout=30)
    standin.agent_pid = None
    assert len(standin.seen_procs) == 4  # cmdline + environ, for each of the two channels
    seen = b"".join(standin.seen_procs) + out + err
    assert not [s for s in SECRETS if s.encode() in seen]

    # Failures print errors, never the secrets (the Telegram URL holds the token).
    outputs = []
    standin.telegram_status = 401
    auth_files(abot, 34)
    outputs.append(run_check(abot, at("12:05")))
    standin.stop()
    auth_files(abot, 45)
    outputs.append(run_check(abot, at("12:10")))
    # A secrets file others can read is refused, loudly and without echoing it; alerts wait in the outbox.
    secrets_file = Path(abot.config["alerts"]["secrets_file"])
    secrets_file.chmod(0o644)
    outputs.append(run_check(abot, at("12:15"), "--json"))
    assert "readable by others" in outputs[-1].stdout
    assert "HTTP 401" in outputs[0].stdout and "unreachable" in outputs[1].stdout
    state = (abot.root / "state" / "check-shop.json").read_text()
    printed = "".join(p.stdout + p.stderr for p in outputs) + state + (abot.root / "metrics" / "waops.prom").read_text()
    assert not [s for s in SECRETS if s in printed]
    assert json.loads(state)["outbox"], "undelivered alerts are kept for the next run"


def test_metrics_file_content_and_atomic_replace(abot: Bot, tmp_path: Path) -> None:
    other = Bot(tmp_path, name="support")
    other.write_config(
        **{
            **abot.config,
            "name": "support",
            "auth_dir": str(Path(abot.config["auth_dir"]).parent / "s2" / "auth"),  # the bot user's dirs
            "health_file": str(Path(abot.config["auth_dir"]).parent / "s2" / "health.json"),
            "backup_dir": str(tmp_path / "s2" / "backups"),
            "alerts": {"quiet_hours": ""},
        }
    )
    other.populate(prekeys=3)
    backup = abot.backup()
    assert backup["verified"]
    created = datetime.fromisoformat(abot.listing()[0]["created_at"].replace("Z", "+00:00"))
    health = Path(abot.config["health_file"])
    health.write_text(
        json.dumps(
            {
                "schema": 1,
                "bot": "shop",
                "connection": "open",
                "session_started_at": "2026-11-30T08:00:00Z",
                "last_keepalive_at": "2026-11-30T11:00:00Z",
                "last_message_sent_at": None,
                "updated_at": "2026-11-30T11:00:00Z",
            }
        )
    )
    now = created + timedelta(minutes=90)
    check(abot, now.isoformat())
    check(other, now.isoformat())
    prom = abot.root / "metrics" / "waops.prom"
    text = prom.read_text()

    helps = re.findall(r"^# HELP (\S+)", text, re.M)
    assert len(helps) == len(set(helps)) and len(re.findall(r"^# TYPE ", text, re.M)) == len(helps)
    values = dict(re.findall(r"^(\w+\{[^}]*\}) (\S+)$", text, re.M))
    assert values['waops_auth_files{bot="shop",store="files"}'] == "34"
    assert values['waops_auth_files{bot="support",store="files"}'] == "7"
    assert values['waops_backups{bot="shop"}'] == "1" and values['waops_backups{bot="support"}'] == "0"
    assert values['waops_backup_newest_verified{bot="shop"}'] == "1"
    assert values['waops_backup_newest_age_seconds{bot="shop"}'] == "5400"
    assert values['waops_session_state{bot="shop",state="open"}'] == "1"
    assert values['waops_session_state{bot="support",state="unknown"}'] == "1"
    assert values['waops_last_keepalive_timestamp_seconds{bot="shop"}'] == str(
        datetime(2026, 11, 30, 11, tzinfo=UTC).timestamp()
    )
    # No bot process here: it is down, so the session does not count as open and has no age.
    assert values['waops_process_up{bot="shop"}'] == "0" and values['waops_session_open{bot="shop"}'] == "0"
    assert not any(k.startswith("waops_session_age_seconds") for k in values)
    assert values['waops_alert_active{bot="shop",condition="auth_files"}'] == "0"
    assert abs(float(values['waops_check_timestamp_seconds{bot="shop"}']) - now.timestamp()) < 0.01
    assert oct(prom.stat().st_mode & 0o777) == "0o644"

    # Replaced by rename: a reader holding the old file keeps a complete old file; no temp file remains.
    with prom.open() as before:
        inode = os.fstat(before.fileno()).st_ino
        auth_files(abot, 45)
        check(abot, (now + timedelta(minutes=5)).isoformat())
        assert before.read() == text
    assert prom.stat().st_ino != inode
    assert 'waops_alert_active{bot="shop",condition="auth_files"} 1' in prom.read_text()
    assert sorted(p.name for p in prom.parent.iterdir()) == ["waops.prom"]


def test_backup_stale_then_fresh_then_failing_verification(abot: Bot, standin: StandIn) -> None:
    # The backups are real, so their times follow the wall clock: quiet hours off, or a run at 01:00-06:00
    # UTC would defer these warnings (no test may depend on the time of day).
    alerts(abot, backup_max_age_hours=0.01, quiet_hours="")  # 36 s: backups a moment apart tell old from new
    abot.backup()
    first = datetime.fromisoformat(abot.listing()[0]["created_at"].replace("Z", "+00:00"))
    assert check(abot, (first + timedelta(seconds=60)).isoformat())["active"] == ["backup_stale"]
    second = abot.backup()
    created = datetime.fromisoformat(abot.listing()[0]["created_at"].replace("Z", "+00:00"))
    assert check(abot, (created + timedelta(seconds=5)).isoformat())["ok"]
    with (Path(second["path"]) / "auth.tar").open("ab") as f:  # bit rot on the backup disk
        f.write(b"\0" * 512)
    assert abot.run("verify").returncode == 1
    alerts(abot, backup_max_age_hours=1)
    r = check(abot, (created + timedelta(minutes=11)).isoformat())
    assert r["active"] == ["backup_unverified"]
    assert [(h["condition"], h["event"]) for h in standin.hooks()] == [
        ("backup_stale", "open"),
        ("backup_stale", "clear"),
        ("backup_unverified", "open"),
    ]


def test_concurrent_runs_alert_once_and_a_held_repair_lock_never_blocks(abot: Bot, standin: StandIn) -> None:
    auth_files(abot, 45)
    cmd = check_argv(abot, at("12:00"))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 1 and b"Traceback" not in err, err
    assert len(standin.hooks()) == 1 and len(standin.telegram()) == 1
    assert json.loads((abot.root / "state" / "check-shop.json").read_text())["conditions"]["auth_files"]["open"]

    # A repair holds the bot's lock (as reset does while it waits for a QR scan): the check does not wait
    # for it, and leaves the session alone meanwhile. The process here is down (no bot runs), so once the lock
    # is free the session incident opens after session_down_minutes.
    alerts(abot, session_down_minutes=10)
    abot.lock_dir.mkdir(exist_ok=True)
    fd = os.open(abot.lock_dir / "waops-shop.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for t in ("12:05", "12:25"):  # bot.run's timeout (30 s) fails the test if it waited (lock-wait 120)
            r = check(abot, at(t))
            assert "session_down" not in r["active"] and any("lock held" in e for e in r["events"])
    finally:
        os.close(fd)
    assert "session_down" not in check(abot, at("12:30"))["active"]
    r = check(abot, at("12:40"))
    assert "session_down" in r["active"]
    (text,) = [t for t in standin.telegram() if "session" in t]
    assert text.startswith("[waops] CRITICAL shop@") and "session not open for 10 min: process " in text


def test_quiet_hours_may_end_at_24_00(abot: Bot, standin: StandIn) -> None:
    """Quiet hours "22:00-24:00" are valid for the keep-alive agent and the role's preflight (the same variable): the
    check must take it too, not fail with a config error on every run."""
    alerts(abot, quiet_hours="22:00-24:00")
    auth_files(abot, 45)
    r = check(abot, at("23:30"))
    assert r["quiet_hours"] and r["active"] == ["auth_files"] and standin.requests == []
    check(abot, at("00:00", day=1))
    assert [h["event"] for h in standin.hooks()] == ["open"]
