"""Facts v1 (docs/CONTRACTS.md, contract 2): one bot's document, assembled from the other modules."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .base import MAX_CHILD_REPLY, MAX_SMALL_JSON, AgentError, iso, now_utc, parse_iso, read_small_json
from .catalog import is_verified, list_backups
from .fence import fence_facts
from .keys import creds_summary, key_type
from .library import _child_library_info, library_info
from .logtail import journal_reads, logs_from_files, logs_from_journald
from .offhost import offhost_facts
from .pglayout import sql_facts
from .pgstore import Psql
from .privdrop import Call, _child_read, as_bot, prefetch, read_as_bot
from .process import ProcTable, count_instances, process_pm2, process_systemd, run_quiet, show_units, unit_of
from .restore import restore_pool
from .sqlitestore import _child_sqlite_facts, sqlite_facts

if TYPE_CHECKING:
    from .config import BotConfig


def auth_facts(cfg: BotConfig) -> dict[str, Any]:
    res: dict[str, Any] = {"store": cfg.auth_store, "dir": cfg.auth_dir, "file_count": 0, "by_type": {},
                           "creds": {"present": False, "parses": False, "linked": False, "me_id": None,
                                     "mtime": None}, "db": None}
    got = as_bot(cfg, _child_auth_facts, cfg.auth_dir)
    res.update({k: v for k, v in got.items() if k != "creds"})
    res["creds"].update(got["creds"])
    if cfg.pg is not None:
        res["db"] = db_facts(cfg)
    if cfg.sqlite is not None:
        res["db"] = sqlite_facts(cfg)
    return res


def _child_auth_facts(_: None, auth_dir: str) -> dict[str, Any]:
    """(as the bot) File counts by key type and the creds summary of the auth folder."""
    res: dict[str, Any] = {"creds": {}}
    by_type: dict[str, int] = {}
    try:
        with os.scandir(auth_dir) as it:
            for e in it:
                t = key_type(e.name)
                by_type[t] = by_type.get(t, 0) + 1
        res["file_count"] = sum(by_type.values())
        res["by_type"] = dict(sorted(by_type.items()))
        res["exists"] = True
    except OSError as e:
        res["exists"] = False
        if not isinstance(e, FileNotFoundError):
            res["error"] = e.strerror or str(e)
    cpath = os.path.join(auth_dir, "creds.json")
    with contextlib.suppress(OSError):
        st = os.stat(cpath)
        res["creds"].update(present=True, mtime=iso(datetime.fromtimestamp(st.st_mtime, UTC)), size=st.st_size)
        with contextlib.suppress(ValueError, OSError):
            res["creds"].update(creds_summary(read_small_json(cpath, follow=True)))
    return res


def db_facts(cfg: BotConfig) -> dict[str, Any]:
    try:
        out = Psql(cfg.pg or {}, timeout=5).run(sql_facts(cfg.pg or {})).decode("utf-8", "replace")
    except AgentError as e:
        return {"reachable": False, "error": str(e)[:1000]}
    by_type: dict[str, int] = {}
    creds: dict[str, Any] = {"present": False, "parses": False, "linked": False, "me_id": None}
    for line in out.splitlines():
        if line.startswith("CREDS|"):
            creds["present"] = True
            with contextlib.suppress(ValueError):
                creds.update(creds_summary(json.loads(line[6:])))
        elif "|" in line:
            t, n = line.rsplit("|", 1)
            by_type[t] = int(n)
    return {"reachable": True, "error": None, "rows": sum(by_type.values()), "by_type": by_type, "creds": creds}


def backups_facts(cfg: BotConfig) -> dict[str, Any]:
    backups = list_backups(cfg)
    res: dict[str, Any] = {"dir": cfg.backup_dir, "count": len(backups), "latest": None,
                           "latest_verified": None, "latest_restorable": None}
    for key, b in (("latest", backups[-1] if backups else None),
                   ("latest_verified", next((b for b in reversed(backups) if is_verified(b)), None)),
                   ("latest_restorable", next(iter(restore_pool(cfg, backups)), None))):
        if b:
            m = b["summary"]
            created = parse_iso(m.get("created_at"), naive="local")
            res[key] = {"id": b["id"], "created_at": m.get("created_at"), "reason": m.get("reason"),
                        "verified": is_verified(b), "age_s": int((now_utc() - created).total_seconds())
                        if created else None, "creds_linked": m.get("creds_linked")}
    return res


def health_facts(cfg: BotConfig) -> dict[str, Any] | None:
    try:  # read as the bot user: a link there can only show us what the bot could read itself
        got = read_as_bot(cfg, cfg.health_file, MAX_SMALL_JSON)
        if got is None:
            return None
        if len(got[0]) > MAX_SMALL_JSON:
            raise ValueError("too big")
        doc = json.loads(got[0])
    except AgentError:  # the child could not open or read it (a FIFO, a link to nowhere, no access)
        return {"error": "unreadable health file: OSError"}
    except ValueError as e:
        return {"error": f"unreadable health file: {e.__class__.__name__}"}
    if not isinstance(doc, dict):
        return {"error": "health file is not a JSON object"}
    updated = parse_iso(doc.get("updated_at"), naive="local") or datetime.fromtimestamp(got[1]["mtime"], UTC)
    doc["age_s"] = int((now_utc() - updated).total_seconds())
    return doc


def disk_facts(cfg: BotConfig) -> dict[str, Any]:
    path = os.path.dirname(cfg.auth_dir)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    try:
        sv = os.statvfs(path)
    except OSError as e:
        return {"path": path, "error": e.strerror}
    free = sv.f_bavail * sv.f_frsize
    total = sv.f_blocks * sv.f_frsize
    return {"path": path, "free_bytes": free, "free_pct": round(100.0 * free / total, 1) if total else None}


def node_version() -> dict[str, Any]:
    node = shutil.which("node") or ("/usr/bin/node" if os.path.exists("/usr/bin/node") else None)
    if not node:
        return {"version": None, "error": "node not found"}
    p = run_quiet([node, "--version"])
    return {"version": p.stdout.decode().strip() if p and p.returncode == 0 else None}


def guarded(fn: Callable[[], Any]) -> Any:
    """One broken part of a host must not hide the rest of the facts."""
    try:
        return fn()
    except Exception as e:
        return {"error": f"{e.__class__.__name__}: {e}"[:300]}


def bot_reads(cfg: BotConfig, log_files: dict[str, str] | None) -> list[Call]:
    """The bot-user reads of one bot's facts, as each part below asks `as_bot` for them (the same function
    and arguments): done ahead in one child, they cost one fork and privilege drop instead of five."""
    calls: list[Call] = [(_child_read, (cfg.health_file, MAX_SMALL_JSON, False)),
                         (_child_auth_facts, (cfg.auth_dir,)), (_child_library_info, (cfg,))]
    if cfg.log_window_bytes <= MAX_CHILD_REPLY // 8:  # one reply carries both tails (base64) with the rest
        calls += [(_child_read, (path, cfg.log_window_bytes, True))
                  for stream in ("out", "err") if (path := (log_files or {}).get(stream))]
    if cfg.sqlite is not None:
        calls.append((_child_sqlite_facts, (cfg.sqlite["path"], cfg.sqlite["table"])))
    return calls


class HostReads:
    """What the bots of one host read alike, read once for all of them in a facts run: the process
    table, the state of every systemd unit (one `systemctl show`), the journal of every unit (one
    `journalctl`), each pm2 daemon's app list. Whatever cannot be read that way is read per bot."""

    def __init__(self, configs: list[BotConfig]) -> None:
        def shared(fn: Callable[[], Any], default: Any) -> Any:  # a surprise here: each bot reads its own
            try:
                return fn()
            except Exception:
                return default

        self.procs: ProcTable | None = shared(ProcTable, None)
        journaled = [c for c in configs if c.service_manager == "systemd" and not c.log_files]
        self.units: dict[str, str] = shared(
            lambda: show_units([unit_of(c) for c in configs if c.service_manager == "systemd"]), {})
        windows = {c.log_window_bytes for c in journaled}
        self.window = windows.pop() if len(windows) == 1 else None
        self.journals: dict[str, tuple[list[bytes], int]] = shared(
            lambda: journal_reads([unit_of(c) for c in journaled], self.window), {}) if self.window else {}
        self.pm2_daemons: dict[str, list[Any] | None] = {}

    def journal(self, unit: str, window: int) -> tuple[list[bytes], int] | None:
        return self.journals.get(unit) if window == self.window else None


def bot_facts(cfg: BotConfig, node: dict[str, Any], host: HostReads | None = None) -> dict[str, Any]:
    logs_files: dict[str, str] = {}
    if cfg.service_manager == "pm2":
        got = guarded(lambda: process_pm2(cfg, host.pm2_daemons if host else None))
        proc, logs_files = got if isinstance(got, tuple) else ({"manager": "pm2", **got}, {})
    else:
        proc = guarded(lambda: process_systemd(cfg, host.units.get(unit_of(cfg)) if host else None))
    proc["instances"] = guarded(lambda: count_instances(cfg, host.procs if host else None))
    with prefetch(cfg, bot_reads(cfg, cfg.log_files or (logs_files if cfg.service_manager == "pm2" else None))):
        if cfg.log_files:
            logs = guarded(lambda: logs_from_files(cfg.log_files, cfg.log_window_bytes, "file", cfg))
        elif cfg.service_manager == "pm2":
            logs = guarded(lambda: logs_from_files(logs_files, cfg.log_window_bytes, "pm2", cfg))
        else:
            unit = proc.get("unit", cfg.service_name)
            logs = guarded(lambda: logs_from_journald(unit, cfg.log_window_bytes,
                                                      host.journal(unit, cfg.log_window_bytes) if host else None))
        return {
            "bot": cfg.name, "process": proc, "health": guarded(lambda: health_facts(cfg)), "logs": logs,
            "auth": guarded(lambda: auth_facts(cfg)), "backups": guarded(lambda: backups_facts(cfg)),
            "library": guarded(lambda: library_info(cfg)), "node": node, "disk": guarded(lambda: disk_facts(cfg)),
            "offhost": guarded(lambda: offhost_facts(cfg)), "fence": guarded(lambda: fence_facts(cfg)),
        }


def quick_facts(cfg: BotConfig) -> dict[str, Any]:
    """What the session and crash-loop conditions read, and nothing else: the process (pm2's RPC socket or
    systemd) and the health file. This is all the every-minute check and a reported close cost: no log
    window, no auth folder, no backups, no database."""
    if cfg.service_manager == "pm2":
        got = guarded(lambda: process_pm2(cfg))
        proc = got[0] if isinstance(got, tuple) else {"manager": "pm2", **got}
    else:
        proc = guarded(lambda: process_systemd(cfg))
    return {"bot": cfg.name, "process": proc, "health": guarded(lambda: health_facts(cfg)),
            "fence": guarded(lambda: fence_facts(cfg))}
