"""`waops-host check`: the scheduled health check, its alerts and node_exporter metrics.

It never gathers facts itself: it calls the agent's own `bot_facts` (the same document `waops-host
facts` prints) and `bot_lock`. Settings in checkconf, conditions, alerts and metrics in their modules.

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

import json
import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from .alerts import Run, Sender
from .base import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    AgentError,
    ConfigError,
    fsync_dir,
    log,
    parse_iso,
    read_small_json,
    write_json_file,
)
from .checkconf import MAINTENANCE_SENSITIVE, QUICK_CONDITIONS, STATE_SCHEMA, CheckConfig, iso
from .conditions import Finding, decrypt_flood, enforce_fence, evaluate, reported_close, session_view
from .facts import bot_facts, quick_facts
from .locks import bot_lock, ensure_root_dir, file_lock, read_backup_run, read_lease
from .metrics import samples, write_metrics


def repair_running(cfg: Any, lock_dir: str) -> bool:
    """A repair holds the bot's lease (stop to verify, QR wait included), or an agent command holds the
    bot's lock: probed without waiting (a 10-minute reset must not stall the check)."""
    if read_lease(cfg, lock_dir) is not None:
        return True
    try:
        with bot_lock(cfg, lock_dir, 0):
            return False
    except AgentError as e:
        if e.code == EXIT_LOCKED:
            return True
        raise


def load_state(path: str, bot: str, events: list[str]) -> dict[str, Any]:
    try:
        st = read_small_json(path, 4 << 20)
        if isinstance(st, dict) and st.get("schema") == STATE_SCHEMA and st.get("bot") == bot:
            return st
        events.append(f"state file {path} has another shape; starting over")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        events.append(f"state file {path} unreadable ({e.__class__.__name__}); starting over")
    return {"schema": STATE_SCHEMA, "bot": bot}


def check_bot(cfg: Any, args: Any, now: datetime, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bot's check. `args.quick`: the session and crash-loop conditions only (the others keep their
    state). `report`: what the bot's keep-alive agent reported (report.py): a connection close (a session
    that is not open opens its incident at once, without the usual hold) or a count of messages failing
    to decrypt (taken with the health file's)."""
    cc = CheckConfig.from_bot(cfg)
    quick = bool(getattr(args, "quick", False))
    host = socket.gethostname()
    ensure_root_dir(args.state_dir, 0o700)  # root's alone: a link or a foreign dir is refused
    path = os.path.join(args.state_dir, f"check-{cfg.name}.json")
    busy = "another check of this bot is running"
    with file_lock(os.path.join(args.lock_dir, f"waops-{cfg.name}.check.lock"), args.lock_wait, busy):
        events: list[str] = []
        state = load_state(path, cfg.name, events)
        run = Run(cfg.name, host, cc, state, now)
        run.events += events
        if quick:  # the fence's owner lookup may ask the off-host repository: the full check enforces it
            facts = quick_facts(cfg)
        else:
            run.events += enforce_fence(cfg)
            facts = bot_facts(cfg, {"version": None})
            if isinstance(facts.get("backups"), dict):
                facts["backups"]["last_run"] = read_backup_run(cfg, args.lock_dir)
        findings = evaluate(facts, cc, now, state)
        if quick:
            findings = {n: (f if n in QUICK_CONDITIONS else None) for n, f in findings.items()}
        if report is not None and report.get("kind") == "decrypt":
            health = facts.get("health") if isinstance(facts.get("health"), dict) else {}
            findings["decrypt_flood"] = decrypt_flood(health, session_view(facts)[0], now, report["failures"])
        elif report is not None and cc.session_down_minutes > 0:  # 0 turns the session condition off
            findings["session_down"] = reported_close(findings.get("session_down"), report)
        if facts.get("fence"):  # moved away: nothing here is expected to run, back up or send
            findings = {name: Finding(False) for name in findings}
        if repair_running(cfg, args.lock_dir):
            busy_since = parse_iso(state.get("repair_lock_since"), naive="utc") or now
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
        state.update(updated_at=iso(now))
        if not quick:  # the metrics need the whole facts; a quick run leaves the last full run's
            state["metrics"] = samples(cfg.name, facts, state, now)
        write_json_file(path, state)
        fsync_dir(args.state_dir)
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


def main(args: Any, configs: list[Any]) -> int:
    now = parse_iso(args.now, naive="utc") if args.now else datetime.now(UTC)
    if now is None:
        raise ConfigError(f"--now {args.now!r} is not an ISO 8601 time")
    results, code = [], EXIT_OK
    for cfg in configs:
        try:
            r = check_bot(cfg, args, now)
            code = max(code, EXIT_OK if r["ok"] else EXIT_FAILED)
        except AgentError as e:
            r = {"bot": cfg.name, "ok": False, "error": str(e), "exit_code": e.code}
            code = e.code if e.code != EXIT_OK else code
        except Exception as e:  # a broken part must not stop the other bots, or the metrics
            r = {
                "bot": cfg.name,
                "ok": False,
                "error": f"{e.__class__.__name__}: {e}"[:300],
                "exit_code": EXIT_FAILED,
            }
            code = max(code, EXIT_FAILED)
        results.append(r)
    if args.metrics_file and not args.quick:
        try:
            write_metrics(args.metrics_file, args.state_dir, args.config_dir, args.lock_dir)
        except (OSError, AgentError) as e:
            log(f"metrics file {args.metrics_file}: {e.strerror if isinstance(e, OSError) else e}")
            code = max(code, EXIT_FAILED)
    if args.json:
        json.dump({"command": "check", "ok": code == EXIT_OK, "results": results}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(human(r, now) for r in results) + "\n")
    return code
