"""The check's conditions: facts -> findings (session down, crash loop, backups, off-host copies)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .base import parse_iso
from .checkconf import DECRYPT_FLOOD, DECRYPT_WINDOW_S, PROCESS_UP, SESSION_STATES, STALE_TOLERANCE_S, iso, minutes
from .fence import do_fence, gate, read_fence
from .process import process_pm2, process_systemd

if TYPE_CHECKING:
    from .checkconf import CheckConfig


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
        updated, uptime = parse_iso(health.get("updated_at"), naive="utc"), proc.get("uptime_s")
        started = time.time() - uptime if isinstance(uptime, (int, float)) else None
        if conn == "open" and updated and started and updated.timestamp() < started - STALE_TOLERANCE_S:
            conn = "stale"
    return proc.get("status") in PROCESS_UP, conn


def evaluate(facts: dict[str, Any], cc: CheckConfig, now: datetime, state: dict[str, Any]) -> dict[str, Finding | None]:
    """Every condition of one bot. None = not evaluated (its incident state stays as it was)."""
    out: dict[str, Finding | None] = {}
    # "never" (no message yet, no backup yet) is measured from the check's first run for the bot
    first_run = parse_iso(state.setdefault("first_run_at", iso(now)), naive="utc") or now
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
        ref = (parse_iso(health.get("last_message_sent_at"), naive="utc")
               or parse_iso(health.get("session_started_at"), naive="utc") or first_run)
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
        created = parse_iso((latest or {}).get("created_at"), naive="utc")
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
    out["decrypt_flood"] = decrypt_flood(health, up, now)
    out.update(offhost_findings(facts, cc, now, first_run))
    return out


def reported_close(session: Finding | None, report: dict[str, Any]) -> Finding | None:
    """The session condition right after the bot's keep-alive agent reported a close (report.py). A
    session that is not open raises at once: the agent saw the close, there is nothing to wait for. A
    session that keeps closing (`flapping`: several closes within a minute or two) raises even when it
    happens to be open at this instant: two copies replacing each other (440) look open half the time."""
    code = report.get("code")
    details = {"reported_close": {"code": code, "at": report.get("at"), "closes": report.get("closes")}}
    if session is not None and session.active:
        return Finding(True, f"{session.summary} (the bot reported a close, code {code})", session.level,
                       timedelta(0), {**session.details, **details})
    if session is not None and report.get("flapping"):
        return Finding(True, f"connection flapping: {report.get('closes')} closes reported by the bot within "
                             f"{report.get('window_s')} s, last code {code}", 2, timedelta(0), details)
    return session


def decrypt_flood(health: dict[str, Any], up: bool, now: datetime, reported: int = 0) -> Finding:
    """Messages failing to decrypt (Bad MAC, no session): the keep-alive agent counts them in the health file
    and reports a flood at once (`reported`, report.py). The bot writes both: the count is taken only as
    a bounded integer with a recent time, and its reason is shown only as short printable text."""
    df = health.get("decrypt_failures") if isinstance(health.get("decrypt_failures"), dict) else {}
    count = df.get("count")
    count = count if type(count) is int and 0 <= count <= 10**6 else 0
    at = parse_iso(df.get("last_at"), naive="utc") if isinstance(df.get("last_at"), str) else None
    if at is None or not -STALE_TOLERANCE_S <= (now - at).total_seconds() <= DECRYPT_WINDOW_S:
        count = 0  # failures of another window (or a time the bot made up) say nothing about now
    count = max(count, reported)
    reason = df.get("last_reason") if isinstance(df.get("last_reason"), str) else ""
    reason = "".join(c for c in reason[:60] if c.isprintable())
    return Finding(
        up and count >= DECRYPT_FLOOD,
        f"{count} messages failed to decrypt within {DECRYPT_WINDOW_S // 60} min"
        + (f" (last: {reason})" if reason else "") + ": broken session keys",
        2,
        details={"failures": count, "window_s": DECRYPT_WINDOW_S},
    )


def backup_failed(backups: dict[str, Any]) -> Finding:
    """The last scheduled backup failed (nothing kept, or it did not verify), and no verified backup was
    made since: alert now, not when the newest backup passes the age limit hours later."""
    run = backups.get("last_run") if isinstance(backups.get("last_run"), dict) else None
    if not run or run.get("ok") is not False:
        return Finding(False)
    at = parse_iso(run.get("at"), naive="utc")
    latest = backups.get("latest_verified") if isinstance(backups.get("latest_verified"), dict) else None
    since = parse_iso((latest or {}).get("created_at"), naive="utc")
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


def enforce_fence(cfg: Any) -> list[str]:
    """A bot moved to another host while this one was down stops here the moment the check sees it:
    by its fence marker, or by the owner its repository names."""
    marker = read_fence(cfg)
    if marker is None:
        verdict = gate(cfg)  # fences (marker, masked units) when another host owns the bot
        if verdict.get("allowed"):
            return []
        marker = read_fence(cfg) or {}
    if _process_up(cfg):
        done = do_fence(cfg, marker.get("owner"), "the check found a fenced bot running")
        return [f"fenced: moved to {marker.get('owner')}; stopped here" + "".join(f" ({e})" for e in done["errors"])]
    return [f"fenced: moved to {marker.get('owner')}"]


def _process_up(cfg: Any) -> bool:
    try:
        proc = process_pm2(cfg)[0] if cfg.service_manager == "pm2" else process_systemd(cfg)
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
    history = [h for h in history if parse_iso(h[0], naive="utc") and now - parse_iso(h[0], naive="utc") <= window]  # type: ignore[operator]
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
    "decrypt_flood": "messages decrypt again",
    "offhost_stale": "a fresh off-host copy exists",
    "offhost_failed": "off-host copies and checks succeed again",
}


def offhost_created(oh: dict[str, Any]) -> datetime | None:
    """When the set last copied off-host was made (else when it was copied)."""
    return parse_iso(oh.get("last_backup_created_at"), naive="utc") or parse_iso(oh.get("last_ok_at"), naive="utc")
