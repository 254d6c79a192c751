"""The node_exporter textfile metrics the check writes for every configured bot."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import Any

from .base import parse_iso, read_small_json
from .checkconf import CONDITIONS, SESSION_STATES
from .conditions import auth_count, offhost_created, session_view
from .locks import file_lock

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
    started = parse_iso(health.get("session_started_at"), naive="utc")
    if up and conn == "open" and started:
        out.append(["waops_session_age_seconds", {}, max(0, int((now - started).total_seconds()))])
    for key, name in (
        ("last_keepalive_at", "waops_last_keepalive_timestamp_seconds"),
        ("last_message_sent_at", "waops_last_message_sent_timestamp_seconds"),
    ):
        t = parse_iso(health.get(key), naive="utc")
        if t:
            out.append([name, {}, round(t.timestamp(), 3)])
    backups = facts.get("backups") if isinstance(facts.get("backups"), dict) else {}
    latest = backups.get("latest") if isinstance(backups.get("latest"), dict) else None
    if isinstance(backups.get("count"), int):
        out.append(["waops_backups", {}, backups["count"]])
    created = parse_iso((latest or {}).get("created_at"), naive="utc")
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


def write_metrics(path: str, state_dir: str, config_dir: str, lock_dir: str) -> None:
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
    with file_lock(os.path.join(lock_dir, "waops-metrics.lock"), 30, "another run is writing the metrics"):
        per_bot = {}
        for bot in bots:
            with contextlib.suppress(OSError, ValueError):
                st = read_small_json(os.path.join(state_dir, f"check-{bot}.json"))
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
