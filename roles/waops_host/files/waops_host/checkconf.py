"""Settings of the scheduled check: a bot's `alerts` object with defaults, quiet hours, conditions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .base import ConfigError

STATE_SCHEMA = 1
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
    "decrypt_flood": "messages failing to decrypt",
    "offhost_stale": "off-host copy age",
    "offhost_failed": "off-host copy",
}
# Conditions about the running bot: a repair holding the bot lock stops/restarts it on purpose.
MAINTENANCE_SENSITIVE = ("session_down", "no_message_sent", "crash_loop", "decrypt_flood")
# What the every-minute check (`check --quick`) and a report evaluate: the process and the health file.
QUICK_CONDITIONS = ("session_down", "crash_loop", "decrypt_flood")
# Messages that failed to decrypt (the keep-alive agent's `decrypt_failures` in the health file) within the
# window that make a flood: broken session keys (Bad MAC) while the connection stays open. The same count
# the diagnosis calls a Bad MAC flood; the window is the agent's.
DECRYPT_FLOOD = 10
DECRYPT_WINDOW_S = 300


class ChannelError(Exception):
    pass


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def minutes(td: timedelta) -> int:
    return int(td.total_seconds() // 60)




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
    def from_bot(cls, cfg: Any) -> CheckConfig:
        doc = cfg.doc.get("alerts") or {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{cfg.path}: alerts must be an object")
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
            raise ConfigError(f"{cfg.path}: bad alerts setting: {e}") from None
        return cc

    def in_quiet_hours(self, now: datetime) -> bool:
        if not self.quiet:
            return False
        local = now.astimezone(self.tz)
        m, (start, end) = local.hour * 60 + local.minute, self.quiet
        return start <= m < end if start < end else (m >= start or m < end) if start > end else False
