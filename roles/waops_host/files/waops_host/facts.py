"""Facts v1 (docs/CONTRACTS.md, contract 2): one bot's document, assembled from the other modules."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .base import MAX_SMALL_JSON, AgentError, iso, now_utc, parse_iso, read_small_json
from .catalog import is_verified, list_backups
from .fence import fence_facts
from .keys import creds_summary, key_type
from .library import library_info
from .logtail import logs_from_files, logs_from_journald
from .offhost import offhost_facts
from .pglayout import sql_facts
from .pgstore import Psql
from .privdrop import as_bot, read_as_bot
from .process import count_instances, process_pm2, process_systemd, run_quiet
from .restore import restore_pool
from .sqlitestore import sqlite_facts

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
            created = parse_iso(m.get("created_at"))
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
    updated = parse_iso(doc.get("updated_at")) or datetime.fromtimestamp(got[1]["mtime"], UTC)
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


def bot_facts(cfg: BotConfig, node: dict[str, Any]) -> dict[str, Any]:
    logs_files: dict[str, str] = {}
    if cfg.service_manager == "pm2":
        got = guarded(lambda: process_pm2(cfg))
        proc, logs_files = got if isinstance(got, tuple) else ({"manager": "pm2", **got}, {})
    else:
        proc = guarded(lambda: process_systemd(cfg))
    proc["instances"] = guarded(lambda: count_instances(cfg))
    if cfg.log_files:
        logs = guarded(lambda: logs_from_files(cfg.log_files, cfg.log_window_bytes, "file", cfg))
    elif cfg.service_manager == "pm2":
        logs = guarded(lambda: logs_from_files(logs_files, cfg.log_window_bytes, "pm2", cfg))
    else:
        logs = guarded(lambda: logs_from_journald(proc.get("unit", cfg.service_name), cfg.log_window_bytes))
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
