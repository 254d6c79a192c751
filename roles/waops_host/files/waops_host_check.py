"""`waops-host check`: the scheduled health check, its alerts and node_exporter metrics.

Stdlib only, loaded by the agent (`waops-host check`, contract 1) from beside it in the repository or
from /usr/local/lib/waops-host on a bot host. It never gathers facts itself: it calls the agent's own
`bot_facts` (the same document `waops-host facts` prints) and `bot_lock`, passed in as `agent`.

One run per bot (cron, every 5 minutes):
  facts -> conditions -> incident state machine -> outbox -> channels -> state file -> metrics file.
- An incident opens once (after `session_down_minutes` for the session) and is announced once; it is
  announced again only when it escalates (auth files: warning -> emergency) and once when it clears.
- Messages sit in an outbox in the state file until every channel took them, so a channel that is down
  gets them (in order, clear included) on a later run. Non-critical messages wait for the end of quiet
  hours; an incident that opens and clears unannounced inside quiet hours is never sent at all.
- The state file is written atomically (tmp + fsync + rename) under a per-bot check lock, in a root-only
  directory that survives reboots. The bot's repair/backup lock is only probed, never waited on: while a
  repair holds it, the session and crash-loop conditions are left as they were (a repair stops the bot on
  purpose), unless the lock has been held longer than `maintenance_grace_minutes`.
- Secrets (Telegram token and chat id, webhook URL and secret) come from a root-only file, never from
  argv or the environment, and are redacted from every error we print.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

STATE_SCHEMA = 1
DEFAULT_STATE_DIR = "/var/lib/waops/agent"
DEFAULT_METRICS_FILE = "/var/lib/node_exporter/textfile_collector/waops.prom"
DEFAULT_SECRETS_FILE = "/etc/waops/alerts.json"
MAX_OUTBOX = 100  # a week-long channel outage at one incident an hour still fits; clears are kept first
PROCESS_UP = ("online", "active")
SESSION_STATES = ("open", "connecting", "close", "waiting_link", "stopped", "unknown")
STALE_TOLERANCE_S = 5  # the bot writes its health file within a second of starting
CHANNELS = ("telegram", "webhook")
# condition -> label used in messages and metrics (the order is the order of evaluation and output)
CONDITIONS = {
    "session_down": "session not open",
    "no_message_sent": "no message sent",
    "auth_files": "auth store size",
    "backup_stale": "backup age",
    "backup_unverified": "backup verification",
    "backup_failed": "scheduled backup",
    "crash_loop": "crash loop",
    "offhost_stale": "off-host copy age",
    "offhost_failed": "off-host copy",
}
# Conditions about the running bot: a repair holding the bot lock stops/restarts it on purpose.
MAINTENANCE_SENSITIVE = ("session_down", "no_message_sent", "crash_loop")


class ChannelError(Exception):
    pass


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def minutes(td: timedelta) -> int:
    return int(td.total_seconds() // 60)


# ---------------------------------------------------------------- settings


def _hhmm(text: str) -> int:
    h, m = text.strip().split(":")
    # 24:00 (end of day) too: the keep-alive agent and the role's preflight take "22:00-24:00" for the
    # same variable, and a check that refuses it fails on every run and alerts nobody.
    if not (0 <= int(h) < 24 and 0 <= int(m) < 60) and (int(h), int(m)) != (24, 0):
        raise ValueError(text)
    return int(h) * 60 + int(m)


@dataclass
class CheckConfig:
    """The `alerts` object of a bot's agent config, with defaults (docs/CONTRACTS.md)."""

    session_down_minutes: float = 10.0  # 0 = off
    no_message_minutes: float = 0.0  # 0 = off: quiet bots send nothing for hours
    backup_max_age_hours: float = 7.0  # backups run every 6 h
    offhost_max_age_hours: float = 7.0  # each verified backup goes off-host right away
    backup_verify_grace_minutes: float = 10.0  # a backup is verified right after it is renamed
    crash_restarts: int = 3
    crash_window_minutes: float = 15.0
    maintenance_grace_minutes: float = 30.0
    quiet: tuple[int, int] | None = (60, 360)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    channels: tuple[str, ...] = ()
    secrets_file: str = DEFAULT_SECRETS_FILE
    telegram_api: str = "https://api.telegram.org"
    webhook_header: str = "X-Waops-Secret"
    timeout_s: float = 10.0
    files_warning: int = 200
    files_emergency: int = 300

    @classmethod
    def from_bot(cls, agent: Any, cfg: Any) -> CheckConfig:
        doc = cfg.doc.get("alerts") or {}
        if not isinstance(doc, dict):
            raise agent.ConfigError(f"{cfg.path}: alerts must be an object")
        cc = cls()
        try:
            for key, attr in (
                ("session_down_minutes", "session_down_minutes"),
                ("no_message_sent_minutes", "no_message_minutes"),
                ("backup_max_age_hours", "backup_max_age_hours"),
                ("offhost_max_age_hours", "offhost_max_age_hours"),
                ("backup_verify_grace_minutes", "backup_verify_grace_minutes"),
                ("crash_loop_window_minutes", "crash_window_minutes"),
                ("maintenance_grace_minutes", "maintenance_grace_minutes"),
                ("timeout_s", "timeout_s"),
            ):
                if doc.get(key) is not None:
                    value = float(doc[key])
                    if value < 0:
                        raise ValueError(f"{key} must be >= 0")
                    setattr(cc, attr, value)
            cc.crash_restarts = int(doc.get("crash_loop_restarts", cc.crash_restarts))
            quiet = doc.get("quiet_hours", "01:00-06:00")
            cc.quiet = tuple(map(_hhmm, quiet.split("-"))) if quiet else None  # type: ignore[assignment]
            cc.tz = ZoneInfo(str(doc.get("tz") or "UTC"))
            channels = tuple(doc.get("channels") or ())
            if any(c not in CHANNELS for c in channels):
                raise ValueError(f"channels must be among {', '.join(CHANNELS)}")
            cc.channels = channels
            cc.secrets_file = str(doc.get("secrets_file") or DEFAULT_SECRETS_FILE)
            cc.telegram_api = str(doc.get("telegram_api") or cc.telegram_api).rstrip("/")
            cc.webhook_header = str(doc.get("webhook_secret_header") or cc.webhook_header)
            cc.files_warning = int(cfg.doc.get("files_warning", 200))
            cc.files_emergency = int(cfg.doc.get("files_emergency", 300))
        except (ValueError, TypeError, AttributeError, ZoneInfoNotFoundError) as e:
            raise agent.ConfigError(f"{cfg.path}: bad alerts setting: {e}") from None
        return cc

    def in_quiet_hours(self, now: datetime) -> bool:
        if not self.quiet:
            return False
        local = now.astimezone(self.tz)
        m, (start, end) = local.hour * 60 + local.minute, self.quiet
        return start <= m < end if start < end else (m >= start or m < end) if start > end else False


# ---------------------------------------------------------------- conditions


@dataclass
class Finding:
    """One condition as seen this run. `hold`: how long it must last before an incident opens."""

    active: bool
    summary: str = ""
    level: int = 1  # 1 warning, 2 critical
    hold: timedelta = timedelta(0)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return "critical" if self.level >= 2 else "warning"


def session_view(facts: dict[str, Any]) -> tuple[bool, str]:
    """(process running, connection state from the health file or 'unknown')."""
    proc = facts.get("process") or {}
    health = facts.get("health")
    conn = "unknown"
    if isinstance(health, dict) and "error" not in health and health.get("connection") in SESSION_STATES:
        conn = str(health["connection"])
        # A bot that dies before its first connection.update leaves the last process's "open" behind
        # (a crash loop under pm2 looks online). Written before this process started = not its state.
        # Wall clock on both sides: updated_at is wall time, uptime_s is measured by the agent now.
        updated, uptime = parse_iso(health.get("updated_at")), proc.get("uptime_s")
        started = time.time() - uptime if isinstance(uptime, (int, float)) else None
        if conn == "open" and updated and started and updated.timestamp() < started - STALE_TOLERANCE_S:
            conn = "stale"
    return proc.get("status") in PROCESS_UP, conn


def evaluate(facts: dict[str, Any], cc: CheckConfig, now: datetime, state: dict[str, Any]) -> dict[str, Finding | None]:
    """Every condition of one bot. None = not evaluated (its incident state stays as it was)."""
    out: dict[str, Finding | None] = {}
    # "never" (no message yet, no backup yet) is measured from the check's first run for the bot
    first_run = parse_iso(state.setdefault("first_run_at", iso(now))) or now
    proc = facts.get("process") or {}
    health = facts.get("health") if isinstance(facts.get("health"), dict) else {}
    up, conn = session_view(facts)

    if cc.session_down_minutes <= 0:
        out["session_down"] = Finding(False)
    elif not up:
        why = f"process {proc.get('status') or 'unknown'}" + (f" ({proc['error']})" if proc.get("error") else "")
        out["session_down"] = Finding(
            True,
            why,
            2,
            timedelta(minutes=cc.session_down_minutes),
            {"process": proc.get("status"), "connection": conn},
        )
    elif conn not in ("open", "unknown"):  # no health file: we cannot tell, the process is up
        last = health.get("last_disconnect") or {}
        why = {
            "stale": "health file not written since the process started",
            "waiting_link": "waiting for the phone to link (QR or pairing code)",
        }.get(conn, f"connection {conn}")
        if conn == "stopped" and health.get("stopped_reason"):
            why += f" ({str(health['stopped_reason'])[:200]})"
        elif isinstance(last, dict) and last.get("code") and conn != "stale":
            why += f", last disconnect {last.get('code')} {last.get('reason') or ''}".rstrip()
        out["session_down"] = Finding(
            True,
            why,
            2,
            timedelta(minutes=cc.session_down_minutes),
            {"process": proc.get("status"), "connection": conn, "last_disconnect": last or None},
        )
    else:
        out["session_down"] = Finding(False)

    if cc.no_message_minutes <= 0 or not (up and conn == "open"):
        out["no_message_sent"] = Finding(False)
    else:
        ref = parse_iso(health.get("last_message_sent_at")) or parse_iso(health.get("session_started_at")) or first_run
        idle = now - ref
        out["no_message_sent"] = Finding(
            idle >= timedelta(minutes=cc.no_message_minutes),
            f"no message sent for {minutes(idle)} min (last {health.get('last_message_sent_at') or 'never'})",
            1,
            details={"last_message_sent_at": health.get("last_message_sent_at")},
        )

    auth = facts.get("auth") if isinstance(facts.get("auth"), dict) else {}
    count, unit = auth_count(auth)
    if count is None:
        out["auth_files"] = None  # store unreadable (DB down): neither open nor clear on no data
    else:
        level = 2 if count >= cc.files_emergency else 1 if count >= cc.files_warning else 0
        out["auth_files"] = Finding(
            level > 0,
            f"{count} auth {unit} (warning at {cc.files_warning}, emergency at {cc.files_emergency})",
            max(level, 1),
            details={"count": count},
        )

    backups = facts.get("backups") if isinstance(facts.get("backups"), dict) else {}
    latest = backups.get("latest") if isinstance(backups.get("latest"), dict) else None
    if backups.get("error") and not latest:
        out["backup_stale"] = out["backup_unverified"] = None
    else:
        created = parse_iso((latest or {}).get("created_at"))
        limit = timedelta(hours=cc.backup_max_age_hours)
        if latest and created:
            age = now - created
            stale = Finding(
                age > limit,
                f"newest backup {latest['id']} is {age.total_seconds() / 3600:.1f} h old "
                f"(limit {cc.backup_max_age_hours:g} h)",
                1,
                details={"backup": latest["id"]},
            )
        else:  # none yet (fresh host): measured from when the check first saw none
            age = now - first_run
            stale = Finding(age > limit, f"no backup for {age.total_seconds() / 3600:.1f} h", 1)
        out["backup_stale"] = stale if cc.backup_max_age_hours > 0 else Finding(False)
        unverified = bool(
            latest
            and not latest.get("verified")
            and created
            and now - created > timedelta(minutes=cc.backup_verify_grace_minutes)
        )
        out["backup_unverified"] = Finding(
            unverified,
            f"newest backup {(latest or {}).get('id')} did not verify",
            1,
            details={"backup": (latest or {}).get("id")},
        )

    out["backup_failed"] = backup_failed(backups)
    out["crash_loop"] = crash_loop(proc, cc, now, state)
    out.update(offhost_findings(facts, cc, now, first_run))
    return out


def backup_failed(backups: dict[str, Any]) -> Finding:
    """The last scheduled backup failed (nothing kept, or it did not verify), and no verified backup was
    made since: alert now, not when the newest backup passes the age limit hours later."""
    run = backups.get("last_run") if isinstance(backups.get("last_run"), dict) else None
    if not run or run.get("ok") is not False:
        return Finding(False)
    at = parse_iso(run.get("at"))
    latest = backups.get("latest_verified") if isinstance(backups.get("latest_verified"), dict) else None
    since = parse_iso((latest or {}).get("created_at"))
    if at is not None and since is not None and since > at:
        return Finding(False)
    return Finding(
        True,
        f"{run.get('reason')} backup at {run.get('at')} failed: {str(run.get('error') or 'unknown error')[:300]}",
        1,
        details={"at": run.get("at"), "reason": run.get("reason"), "backup": run.get("id")},
    )


def offhost_findings(facts: dict[str, Any], cc: CheckConfig, now: datetime,
                     first_run: datetime) -> dict[str, Finding | None]:
    """The off-host copy's age and the last push/check outcome (facts `offhost`; None = not configured)."""
    oh = facts.get("offhost")
    if oh is None:
        return {"offhost_stale": Finding(False), "offhost_failed": Finding(False)}
    if not isinstance(oh, dict) or oh.get("error"):
        return {"offhost_stale": None, "offhost_failed": None}
    limit = timedelta(hours=cc.offhost_max_age_hours)
    copied = offhost_created(oh)
    age = now - (copied or first_run)  # the check's clock (--now), like the local backups' age
    stale = Finding(
        age > limit,
        f"off-host copy older than {cc.offhost_max_age_hours:g} h: "
        + (f"{oh.get('last_backup_id')} is {age.total_seconds() / 3600:.1f} h old" if oh.get("last_ok_at")
           else f"none for {age.total_seconds() / 3600:.1f} h"),
        1,
        details={"backup": oh.get("last_backup_id"), "repository": oh.get("repository")},
    )
    check = oh.get("check") if isinstance(oh.get("check"), dict) else {}
    why = [f"last copy failed: {oh['last_error']}"] if oh.get("last_error") else []
    why += [f"repository check failed: {check.get('error')}"] if check.get("ok") is False else []
    failed = Finding(bool(why), "; ".join(why)[:500], 1, details={"repository": oh.get("repository")})
    return {"offhost_stale": stale if cc.offhost_max_age_hours > 0 else Finding(False), "offhost_failed": failed}


def enforce_fence(agent: Any, cfg: Any) -> list[str]:
    """A bot moved to another host while this one was down stops here the moment the check sees it:
    by its fence marker, or by the owner its repository names."""
    if not hasattr(agent, "gate"):
        return []
    marker = agent.read_fence(cfg)
    if marker is None:
        verdict = agent.gate(cfg)  # fences (marker, masked units) when another host owns the bot
        if verdict.get("allowed"):
            return []
        marker = agent.read_fence(cfg) or {}
    if _process_up(agent, cfg):
        done = agent.do_fence(cfg, marker.get("owner"), "the check found a fenced bot running")
        return [f"fenced: moved to {marker.get('owner')}; stopped here" + "".join(f" ({e})" for e in done["errors"])]
    return [f"fenced: moved to {marker.get('owner')}"]


def _process_up(agent: Any, cfg: Any) -> bool:
    try:
        proc = agent.process_pm2(cfg)[0] if cfg.service_manager == "pm2" else agent.process_systemd(cfg)
    except Exception:  # a pm2 daemon that is gone is a stopped bot
        return False
    return str(proc.get("status")) in PROCESS_UP


def auth_count(auth: dict[str, Any]) -> tuple[int | None, str]:
    if auth.get("store") in ("postgres", "sqlite"):  # keys are rows
        db = auth.get("db") or {}
        return (db.get("rows") if db.get("reachable") else None), "rows"
    if auth.get("error") or "file_count" not in auth:
        return None, "files"
    return int(auth["file_count"]), "files"


def crash_loop(proc: dict[str, Any], cc: CheckConfig, now: datetime, state: dict[str, Any]) -> Finding:
    """Restarts (pm2 restart_time / systemd NRestarts) grown by crash_restarts within the window."""
    n = proc.get("restarts")
    history = [h for h in state.get("restarts", []) if isinstance(h, list) and len(h) == 2]
    if not isinstance(n, int):
        return Finding(False)
    if history and n < history[-1][1]:
        history = []  # counter reset (pm2 daemon restarted, unit reinstalled)
    window = timedelta(minutes=cc.crash_window_minutes)
    history = [h for h in history if parse_iso(h[0]) and now - parse_iso(h[0]) <= window]  # type: ignore[operator]
    history.append([iso(now), n])
    state["restarts"] = history
    grown = n - min(h[1] for h in history)
    return Finding(
        cc.crash_restarts > 0 and grown >= cc.crash_restarts,
        f"{grown} restarts in the last {cc.crash_window_minutes:g} min (total {n})",
        2,
        details={"restarts": n, "grown": grown},
    )


RESOLVED = {
    "session_down": "session open again",
    "no_message_sent": "messages are being sent again",
    "auth_files": "auth store back under the warning threshold",
    "backup_stale": "a fresh backup exists",
    "backup_unverified": "the newest backup verifies",
    "backup_failed": "a backup succeeded again",
    "crash_loop": "no more restarts",
    "offhost_stale": "a fresh off-host copy exists",
    "offhost_failed": "off-host copies and checks succeed again",
}


# ---------------------------------------------------------------- incidents and outbox


class Run:
    """One bot's check: state in, messages out. Pure apart from the clock it is given."""

    def __init__(self, bot: str, host: str, cc: CheckConfig, state: dict[str, Any], now: datetime) -> None:
        self.bot, self.host, self.cc, self.state, self.now = bot, host, cc, state, now
        self.events: list[str] = []
        state.setdefault("conditions", {})
        state.setdefault("outbox", [])

    def step(self, findings: dict[str, Finding | None]) -> None:
        for name, f in findings.items():
            st = self.state["conditions"].setdefault(name, {})
            if f is None:
                continue
            if not f.active:
                if st.get("open"):
                    self._clear(name, st)
                self.state["conditions"][name] = {}
                continue
            seen = parse_iso(st.get("seen_since")) or self.now
            st["seen_since"] = iso(seen)
            st["summary"] = f.summary
            if not st.get("open"):
                if self.now - seen >= f.hold:
                    self._open(name, st, f)
            elif f.level > int(st.get("announced_level", 1)):
                st.update(announced_level=f.level, severity=f.severity, critical=True)
                for m in self.state["outbox"]:  # a deferred open goes out with (before) its escalation
                    if m["incident"] == st.get("incident"):
                        m["critical"] = True
                self._queue(
                    name, st, "escalate", f"[waops] CRITICAL {self.bot}@{self.host}: {f.summary} (escalated)", f.details
                )

    def _open(self, name: str, st: dict[str, Any], f: Finding) -> None:
        incident = f"{self.bot}-{name}-{self.now.strftime('%Y%m%dT%H%M%SZ')}"
        st.update(
            open=True,
            incident=incident,
            opened_at=iso(self.now),
            severity=f.severity,
            announced_level=f.level,
            critical=f.level >= 2,
        )
        summary = f.summary
        if f.hold:  # say how long it has lasted, not only what it is
            seen = parse_iso(st.get("seen_since")) or self.now
            summary = f"{CONDITIONS[name]} for {minutes(self.now - seen)} min: {summary}"
        self._queue(name, st, "open", f"[waops] {f.severity.upper()} {self.bot}@{self.host}: {summary}", f.details)

    def _clear(self, name: str, st: dict[str, Any]) -> None:
        mine = [m for m in self.state["outbox"] if m["incident"] == st.get("incident")]
        if not st.get("critical") and mine and not any(m["sent"] for m in mine) and self.cc.in_quiet_hours(self.now):
            # Still waiting for the end of quiet hours, announced nowhere: nobody needs to hear it is over.
            self.state["outbox"] = [m for m in self.state["outbox"] if m["incident"] != st.get("incident")]
            self.events.append(f"{name}: cleared before it was announced; dropped")
            return
        began = parse_iso(st.get("seen_since")) or parse_iso(st.get("opened_at")) or self.now
        self._queue(
            name,
            st,
            "clear",
            f"[waops] RESOLVED {self.bot}@{self.host}: {RESOLVED[name]} "
            f"({CONDITIONS[name]} incident lasted {minutes(self.now - began)} min)",
            {},
        )

    def _queue(self, name: str, st: dict[str, Any], event: str, text: str, details: dict[str, Any]) -> None:
        msg = {
            "id": secrets.token_hex(8),
            "incident": st.get("incident"),
            "condition": name,
            "event": event,
            "severity": "resolved" if event == "clear" else st.get("severity"),
            "critical": bool(st.get("critical")),
            "text": text,
            "details": details,
            "started_at": st.get("seen_since") or st.get("opened_at"),  # first evidence, as incidents count it
            "created_at": iso(self.now),
            "pending": list(self.cc.channels),
            "sent": [],
            "attempts": 0,
            "last_error": None,
        }
        self.state["outbox"].append(msg)
        self.events.append(f"{event} {name}: {text}")
        outbox = self.state["outbox"]
        while len(outbox) > MAX_OUTBOX:  # drop the oldest non-clear message; clears are never lost first
            idx = next((i for i, m in enumerate(outbox) if m["event"] != "clear"), 0)
            dropped = outbox.pop(idx)
            self.events.append(f"outbox full: dropped {dropped['event']} {dropped['condition']}")

    def due(self, msg: dict[str, Any]) -> bool:
        return bool(msg.get("critical")) or not self.cc.in_quiet_hours(self.now)


def payload(run: Run, msg: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "waops",
        "version": 1,
        "id": msg["id"],
        "event": msg["event"],
        "host": run.host,
        "bot": run.bot,
        "condition": msg["condition"],
        "severity": msg["severity"],
        "incident": msg["incident"],
        "started_at": msg["started_at"],
        "at": msg["created_at"],
        "text": msg["text"],
        "details": msg.get("details") or {},
    }


# ---------------------------------------------------------------- channels


def load_secrets(path: str) -> dict[str, Any]:
    """The root-only secrets file: {"telegram": {token, chat_id}, "webhook": {url, secret}}."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ChannelError(f"secrets file {path} is missing") from None
    except OSError as e:
        raise ChannelError(f"secrets file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & 0o077:
            raise ChannelError(
                f"secrets file {path} is readable by others (mode {st.st_mode & 0o777:o}); refusing it: chmod 600"
            )
        try:
            doc = json.loads(f.read(1 << 16))
        except ValueError:
            raise ChannelError(f"secrets file {path} is not JSON") from None
    return doc if isinstance(doc, dict) else {}


def redact(text: str, hidden: list[str]) -> str:
    for s in hidden:
        if s:
            text = text.replace(s, "***")
    return text


def post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> bytes:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "waops-host", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read(1 << 16)
    except urllib.error.HTTPError as e:
        raise ChannelError(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise ChannelError(f"unreachable: {e.reason}") from None
    except (OSError, ValueError) as e:  # timeouts, resets, a malformed URL
        raise ChannelError(f"{e.__class__.__name__}: {e}") from None


def sign_webhook(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """HMAC-SHA256 headers for a webhook body, so a receiver (the collection's EDA event source) can tell our
    posts from forged ones: the MAC covers "<unix time>.<body>" (the time bounds replays) with the webhook
    secret from the root-only secrets file."""
    import hashlib
    import hmac

    stamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Waops-Timestamp": stamp, "X-Waops-Signature": f"sha256={mac}"}


class Sender:
    """Delivers outbox messages to the configured channels; one failure stops that channel this run."""

    def __init__(self, cc: CheckConfig) -> None:
        self.cc = cc
        self.secrets: dict[str, Any] = {}
        self.error: str | None = None
        if cc.channels:
            try:
                self.secrets = load_secrets(cc.secrets_file)
            except ChannelError as e:
                self.error = str(e)
        self.hidden = [str(v) for part in self.secrets.values() if isinstance(part, dict) for v in part.values() if v]

    def send(self, channel: str, run: Run, msg: dict[str, Any]) -> None:
        if self.error:
            raise ChannelError(self.error)
        conf = self.secrets.get(channel) if isinstance(self.secrets.get(channel), dict) else {}
        try:
            if channel == "telegram":
                if not conf.get("token") or not conf.get("chat_id"):
                    raise ChannelError("telegram token or chat_id missing in the secrets file")
                out = post_json(
                    f"{self.cc.telegram_api}/bot{conf['token']}/sendMessage",
                    {"chat_id": conf["chat_id"], "text": msg["text"][:4000], "disable_web_page_preview": True},
                    {},
                    self.cc.timeout_s,
                )
                try:
                    ok = json.loads(out).get("ok") is True
                except (ValueError, AttributeError):
                    ok = False
                if not ok:
                    raise ChannelError("telegram answered without ok=true")
            else:
                if not conf.get("url"):
                    raise ChannelError("webhook url missing in the secrets file")
                headers = {self.cc.webhook_header: str(conf["secret"])} if conf.get("secret") else {}
                body = payload(run, msg)
                if conf.get("secret"):  # signed over the exact bytes post_json sends (json.dumps of the same dict)
                    headers.update(sign_webhook(str(conf["secret"]), json.dumps(body).encode()))
                post_json(str(conf["url"]), body, headers, self.cc.timeout_s)
        except ChannelError as e:
            raise ChannelError(redact(str(e), self.hidden)) from None

    def deliver(self, run: Run) -> None:
        outbox = run.state["outbox"]
        for channel in CHANNELS:
            for msg in outbox:
                if channel not in msg["pending"]:
                    continue
                if channel not in self.cc.channels:  # channel removed from the config since
                    msg["pending"].remove(channel)
                    continue
                if not run.due(msg):
                    continue  # non-critical, quiet hours: later critical ones still go out
                try:
                    self.send(channel, run, msg)
                except ChannelError as e:
                    msg["attempts"] += 1
                    msg["last_error"] = f"{channel}: {e}"
                    run.events.append(f"{channel} failed, retry next run: {e}")
                    break  # keep the order: nothing later goes out on this channel before it
                msg["pending"].remove(channel)
                msg["sent"].append(channel)
                run.events.append(f"sent {msg['event']} {msg['condition']} via {channel}")
        run.state["outbox"] = [m for m in outbox if m["pending"]]


# ---------------------------------------------------------------- metrics


METRICS = {
    "waops_check_timestamp_seconds": ("gauge", "When the check last ran for the bot (unix time)."),
    "waops_process_up": ("gauge", "1 when pm2/systemd reports the bot's process running."),
    "waops_process_restarts_total": ("counter", "Restarts reported by pm2 (restart_time) or systemd (NRestarts)."),
    "waops_session_open": ("gauge", "1 when the process runs and the health file says the connection is open."),
    "waops_session_state": ("gauge", "Connection state from the bot's health file (1 for the current state)."),
    "waops_session_age_seconds": ("gauge", "Seconds since the current session opened."),
    "waops_last_keepalive_timestamp_seconds": ("gauge", "Last keep-alive presence sent (unix time)."),
    "waops_last_message_sent_timestamp_seconds": ("gauge", "Last message sent successfully (unix time)."),
    "waops_backup_newest_age_seconds": ("gauge", "Age of the newest complete backup."),
    "waops_backup_newest_verified": ("gauge", "1 when the newest backup verified."),
    "waops_backups": ("gauge", "Complete backups kept."),
    "waops_auth_files": ("gauge", "Auth keys in the session store (files, or rows for postgres and sqlite)."),
    "waops_offhost_newest_age_seconds": ("gauge", "Age of the backup last copied off-host (restic)."),
    "waops_offhost_last_ok": ("gauge", "1 when the last off-host copy succeeded."),
    "waops_offhost_check_ok": ("gauge", "1 when the last scheduled restic check of the repository passed."),
    "waops_alert_active": ("gauge", "1 while an incident of the condition is open."),
    "waops_alert_outbox_messages": ("gauge", "Alert messages not yet delivered to every channel."),
}


def samples(bot: str, facts: dict[str, Any], state: dict[str, Any], now: datetime) -> list[list[Any]]:
    """This bot's samples as [name, {labels}, value]; kept in its state file until the file is composed."""
    up, conn = session_view(facts)
    health = facts.get("health") if isinstance(facts.get("health"), dict) else {}
    proc = facts.get("process") or {}
    out: list[list[Any]] = [
        ["waops_check_timestamp_seconds", {}, round(now.timestamp(), 3)],
        ["waops_process_up", {}, int(up)],
        ["waops_session_open", {}, int(up and conn == "open")],
    ]
    if isinstance(proc.get("restarts"), int):
        out.append(["waops_process_restarts_total", {}, proc["restarts"]])
    shown = conn if conn in SESSION_STATES else "unknown"  # stale: written by an earlier process
    out += [["waops_session_state", {"state": s}, int(s == shown)] for s in SESSION_STATES]
    started = parse_iso(health.get("session_started_at"))
    if up and conn == "open" and started:
        out.append(["waops_session_age_seconds", {}, max(0, int((now - started).total_seconds()))])
    for key, name in (
        ("last_keepalive_at", "waops_last_keepalive_timestamp_seconds"),
        ("last_message_sent_at", "waops_last_message_sent_timestamp_seconds"),
    ):
        t = parse_iso(health.get(key))
        if t:
            out.append([name, {}, round(t.timestamp(), 3)])
    backups = facts.get("backups") if isinstance(facts.get("backups"), dict) else {}
    latest = backups.get("latest") if isinstance(backups.get("latest"), dict) else None
    if isinstance(backups.get("count"), int):
        out.append(["waops_backups", {}, backups["count"]])
    created = parse_iso((latest or {}).get("created_at"))
    if created:
        out.append(["waops_backup_newest_age_seconds", {}, max(0, int((now - created).total_seconds()))])
        out.append(["waops_backup_newest_verified", {}, int(bool(latest and latest.get("verified")))])
    auth = facts.get("auth") if isinstance(facts.get("auth"), dict) else {}
    count, _unit = auth_count(auth)
    if count is not None:
        out.append(["waops_auth_files", {"store": auth.get("store", "files")}, count])
    out += offhost_samples(facts, now)
    out += [
        ["waops_alert_active", {"condition": c}, int(bool(state["conditions"].get(c, {}).get("open")))]
        for c in CONDITIONS
    ]
    out.append(["waops_alert_outbox_messages", {}, len(state["outbox"])])
    for s in out:
        s[1] = {"bot": bot, **s[1]}
    return out


def offhost_created(oh: dict[str, Any]) -> datetime | None:
    """When the set last copied off-host was made (else when it was copied)."""
    return parse_iso(oh.get("last_backup_created_at")) or parse_iso(oh.get("last_ok_at"))


def offhost_samples(facts: dict[str, Any], now: datetime) -> list[list[Any]]:
    oh = facts.get("offhost")
    if not isinstance(oh, dict) or oh.get("error"):
        return []
    out: list[list[Any]] = [["waops_offhost_last_ok", {}, int(bool(oh.get("last_ok_at")) and not oh.get("last_error"))]]
    copied = offhost_created(oh)
    if copied:
        out.append(["waops_offhost_newest_age_seconds", {}, max(0, int((now - copied).total_seconds()))])
    check = oh.get("check")
    if isinstance(check, dict) and isinstance(check.get("ok"), bool):
        out.append(["waops_offhost_check_ok", {}, int(check["ok"])])
    return out


def _label_value(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(per_bot: dict[str, list[list[Any]]]) -> str:
    """Prometheus text format: every family's HELP/TYPE once, then its samples for every bot."""
    lines = []
    for name, (kind, help_text) in METRICS.items():
        rows = [s for bot in sorted(per_bot) for s in per_bot[bot] if s[0] == name]
        if not rows:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for _, labels, value in rows:
            lab = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value}")
    return "\n".join(lines) + "\n"


def write_metrics(agent: Any, path: str, state_dir: str, config_dir: str, lock_dir: str) -> None:
    """Compose the one file from every configured bot's last samples, atomically (tmp + rename).

    Each bot's cron job runs on its own; a host-wide lock keeps two of them from writing an older
    composition over a newer one.
    """
    directory = os.path.dirname(path) or "."
    missing = []
    d = directory
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):  # node_exporter runs as its own user: 0755, whatever our umask (077)
        os.mkdir(d)
        os.chmod(d, 0o755)
    bots = sorted(n[:-5] for n in os.listdir(config_dir) if n.endswith(".json"))
    with agent.file_lock(os.path.join(lock_dir, "waops-metrics.lock"), 30, "another run is writing the metrics"):
        per_bot = {}
        for bot in bots:
            with contextlib.suppress(OSError, ValueError):
                st = agent.read_small_json(os.path.join(state_dir, f"check-{bot}.json"))
                if isinstance(st, dict) and isinstance(st.get("metrics"), list):
                    per_bot[bot] = st["metrics"]
        tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a crashed run's leftover; O_EXCL below then never writes through a planted link
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o644)  # node_exporter runs as its own user; our umask is 077
                f.write(render_metrics(per_bot))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # a scrape sees the old file or the new one, never half of one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# ---------------------------------------------------------------- one bot, and the command


def repair_running(agent: Any, cfg: Any, lock_dir: str) -> bool:
    """A repair holds the bot's lease (stop to verify, QR wait included), or an agent command holds the
    bot's lock: probed without waiting (a 10-minute reset must not stall the check)."""
    if agent.read_lease(cfg, lock_dir) is not None:
        return True
    try:
        with agent.bot_lock(cfg, lock_dir, 0):
            return False
    except agent.AgentError as e:
        if e.code == agent.EXIT_LOCKED:
            return True
        raise


def load_state(agent: Any, path: str, bot: str, events: list[str]) -> dict[str, Any]:
    try:
        st = agent.read_small_json(path, 4 << 20)
        if isinstance(st, dict) and st.get("schema") == STATE_SCHEMA and st.get("bot") == bot:
            return st
        events.append(f"state file {path} has another shape; starting over")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        events.append(f"state file {path} unreadable ({e.__class__.__name__}); starting over")
    return {"schema": STATE_SCHEMA, "bot": bot}


def check_bot(agent: Any, cfg: Any, args: Any, now: datetime) -> dict[str, Any]:
    cc = CheckConfig.from_bot(agent, cfg)
    host = socket.gethostname()
    agent.ensure_root_dir(args.state_dir, 0o700)  # root's alone: a link or a foreign dir is refused
    path = os.path.join(args.state_dir, f"check-{cfg.name}.json")
    busy = "another check of this bot is running"
    with agent.file_lock(os.path.join(args.lock_dir, f"waops-{cfg.name}.check.lock"), args.lock_wait, busy):
        events: list[str] = []
        state = load_state(agent, path, cfg.name, events)
        run = Run(cfg.name, host, cc, state, now)
        run.events += events
        run.events += enforce_fence(agent, cfg)
        facts = agent.bot_facts(cfg, {"version": None})
        if isinstance(facts.get("backups"), dict):
            facts["backups"]["last_run"] = agent.read_backup_run(cfg, args.lock_dir)
        findings = evaluate(facts, cc, now, state)
        if facts.get("fence"):  # moved away: nothing here is expected to run, back up or send
            findings = {name: Finding(False) for name in findings}
        if repair_running(agent, cfg, args.lock_dir):
            busy_since = parse_iso(state.get("repair_lock_since")) or now
            state["repair_lock_since"] = iso(busy_since)
            if now - busy_since < timedelta(minutes=cc.maintenance_grace_minutes):
                for name in MAINTENANCE_SENSITIVE:
                    findings[name] = None
                state["restarts"] = []  # the repair's own restarts are no crash loop
                run.events.append("repair running (lease or lock held): session and crash-loop left as they were")
        else:
            state.pop("repair_lock_since", None)
        run.step(findings)
        Sender(cc).deliver(run)
        state.update(updated_at=iso(now), metrics=samples(cfg.name, facts, state, now))
        agent.write_json_file(path, state)
        agent.fsync_dir(args.state_dir)
    active = [n for n, st in state["conditions"].items() if st.get("open")]
    return {
        "bot": cfg.name,
        "ok": not active,
        "active": active,
        "events": run.events,
        "outbox": [{k: m[k] for k in ("event", "condition", "pending", "last_error")} for m in state["outbox"]],
        "quiet_hours": cc.in_quiet_hours(now),
        "conditions": {
            n: {k: v for k, v in st.items() if k in ("open", "seen_since", "severity", "summary", "incident")}
            for n, st in state["conditions"].items()
            if st
        },
    }


def human(r: dict[str, Any], now: datetime) -> str:
    stamp = iso(now)
    if "error" in r:
        return f"{stamp} {r['bot']}: check failed: {r['error']}"
    lines = [f"{stamp} {r['bot']}: {e}" for e in r["events"]]
    state = "ok" if r["ok"] else "ACTIVE " + ", ".join(r["active"])
    pending = f", {len(r['outbox'])} message(s) pending" if r["outbox"] else ""
    lines.append(f"{stamp} {r['bot']}: {state}{pending}")
    return "\n".join(lines)


def main(agent: Any, args: Any, configs: list[Any]) -> int:
    now = parse_iso(args.now) if args.now else datetime.now(UTC)
    if now is None:
        raise agent.ConfigError(f"--now {args.now!r} is not an ISO 8601 time")
    results, code = [], agent.EXIT_OK
    for cfg in configs:
        try:
            r = check_bot(agent, cfg, args, now)
            code = max(code, agent.EXIT_OK if r["ok"] else agent.EXIT_FAILED)
        except agent.AgentError as e:
            r = {"bot": cfg.name, "ok": False, "error": str(e), "exit_code": e.code}
            code = e.code if e.code != agent.EXIT_OK else code
        except Exception as e:  # a broken part must not stop the other bots, or the metrics
            r = {
                "bot": cfg.name,
                "ok": False,
                "error": f"{e.__class__.__name__}: {e}"[:300],
                "exit_code": agent.EXIT_FAILED,
            }
            code = max(code, agent.EXIT_FAILED)
        results.append(r)
    if args.metrics_file:
        try:
            write_metrics(agent, args.metrics_file, args.state_dir, args.config_dir, args.lock_dir)
        except (OSError, agent.AgentError) as e:
            agent.log(f"metrics file {args.metrics_file}: {e.strerror if isinstance(e, OSError) else e}")
            code = max(code, agent.EXIT_FAILED)
    if args.json:
        json.dump({"command": "check", "ok": code == agent.EXIT_OK, "results": results}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(human(r, now) for r in results) + "\n")
    return code
