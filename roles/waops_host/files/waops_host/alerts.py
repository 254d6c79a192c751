"""The check's incidents, outbox and alert channels (Telegram, webhook), with secrets redacted."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import parse_iso
from .checkconf import CHANNELS, CONDITIONS, MAX_OUTBOX, ChannelError, iso, minutes
from .conditions import RESOLVED

if TYPE_CHECKING:
    from .checkconf import CheckConfig
    from .conditions import Finding


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
            seen = parse_iso(st.get("seen_since"), naive="utc") or self.now
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
            seen = parse_iso(st.get("seen_since"), naive="utc") or self.now
            summary = f"{CONDITIONS[name]} for {minutes(self.now - seen)} min: {summary}"
        self._queue(name, st, "open", f"[waops] {f.severity.upper()} {self.bot}@{self.host}: {summary}", f.details)

    def _clear(self, name: str, st: dict[str, Any]) -> None:
        mine = [m for m in self.state["outbox"] if m["incident"] == st.get("incident")]
        if not st.get("critical") and mine and not any(m["sent"] for m in mine) and self.cc.in_quiet_hours(self.now):
            # Still waiting for the end of quiet hours, announced nowhere: nobody needs to hear it is over.
            self.state["outbox"] = [m for m in self.state["outbox"] if m["incident"] != st.get("incident")]
            self.events.append(f"{name}: cleared before it was announced; dropped")
            return
        began = parse_iso(st.get("seen_since"), naive="utc") or parse_iso(st.get("opened_at"), naive="utc") or self.now
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
