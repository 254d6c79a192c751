"""Retention of backups and pruning of stale keys (pre-keys, sender keys, broken sessions)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

from .backup import clean_tmp, do_backup
from .base import EXIT_USAGE, AgentError, read_small_json
from .catalog import is_verified, list_backups
from .keys import key_type
from .pglayout import pg_has_updated_at, pg_key, pg_value, pg_where
from .pgstore import Psql
from .privdrop import as_bot
from .restore import is_restorable
from .sqlitestore import _child_sqlite_prune

if TYPE_CHECKING:
    from .config import BotConfig


_PREKEY_RE = re.compile(r"^pre-key-(\d+)\.json$")


def do_prune_keys(cfg: BotConfig, sessions_mode: str | None, dry_run: bool) -> dict[str, Any]:
    mode = sessions_mode or cfg.prune_sessions
    pre = None
    if not dry_run:
        pre = do_backup(cfg, "pre-prune")
        if not pre["ok"]:
            raise AgentError(f"{cfg.name}: pre-prune backup {pre['id']} did not verify; nothing pruned")
    drop = as_bot(cfg, _child_prune_files, cfg.auth_dir, mode, cfg.prekeys_keep, cfg.sender_key_days, dry_run)
    db = None
    if cfg.pg is not None:
        db = prune_keys_db(cfg, mode, dry_run)
    if cfg.sqlite is not None:
        db = as_bot(cfg, _child_sqlite_prune, cfg.sqlite["path"], cfg.sqlite["table"], mode, cfg.prekeys_keep,
                    dry_run)
    return {"bot": cfg.name, "ok": True, "dry_run": dry_run, "pre_prune_backup": pre["id"] if pre else None,
            "files_removed": {k: len(v) for k, v in drop.items()}, "db_removed": db}


def _child_prune_files(_: None, auth_dir: str, mode: str, prekeys_keep: int, sender_key_days: float,
                       dry_run: bool) -> dict[str, list[str]]:
    """(as the bot) Which key files prune-keys drops, and (unless dry_run) drop them."""
    drop: dict[str, list[str]] = {"session": [], "pre-key": [], "sender-key": []}
    if os.path.isdir(auth_dir):
        prekeys: list[tuple[int, str]] = []
        cutoff = time.time() - sender_key_days * 86400
        with os.scandir(auth_dir) as it:
            for e in it:
                if not e.is_file(follow_symlinks=False):
                    continue
                t = key_type(e.name)
                if t == "session":
                    if mode == "all" or _broken_json(e.path):
                        drop["session"].append(e.name)
                elif t == "pre-key" and (mm := _PREKEY_RE.match(e.name)):
                    prekeys.append((int(mm.group(1)), e.name))
                elif t == "sender-key" and e.stat(follow_symlinks=False).st_mtime < cutoff:
                    drop["sender-key"].append(e.name)
        prekeys.sort()
        drop["pre-key"] = [n for _, n in prekeys[: max(0, len(prekeys) - prekeys_keep)]]
        if not dry_run:
            for names in drop.values():
                for n in names:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(auth_dir, n))
    return drop


def _broken_json(path: str) -> bool:
    try:
        doc = read_small_json(path)
    except (OSError, ValueError):
        return True
    return not doc


def prune_keys_db(cfg: BotConfig, mode: str, dry_run: bool) -> dict[str, int]:
    pg = cfg.pg or {}
    k, v, where = pg_key(pg), pg_value(pg), pg_where(pg)
    sess = f"{k} LIKE 'session-%'" + ("" if mode == "all" else f" AND ({v} = 'null'::jsonb OR {v} = '{{}}'::jsonb)")
    # Sender keys go by age, which only a table with updated_at tells (an adopted table keeps them).
    senders = (f"UNION ALL SELECT :\"kc\", 'sender-key' FROM :\"t\" WHERE {where} AND {k} LIKE 'sender-key-%' "
               f"AND {k} NOT LIKE 'sender-key-memory-%' AND updated_at < now() - (:days * interval '1 day')"
               if pg_has_updated_at(pg) else "")
    sql = (
        "\\set keep " + str(int(cfg.prekeys_keep)) + "\n\\set days " + str(float(cfg.sender_key_days)) + "\n"
        "BEGIN;\n"
        "CREATE TEMP TABLE waops_drop ON COMMIT DROP AS "
        f"SELECT :\"kc\" AS key, 'session' AS t FROM :\"t\" WHERE {where} AND {sess} "
        f"UNION ALL SELECT key, 'pre-key' FROM (SELECT :\"kc\" AS key, row_number() OVER "
        f"(ORDER BY substring({k} from '^pre-key-([0-9]+)$')::bigint DESC) AS rn FROM :\"t\" "
        f"WHERE {where} AND {k} ~ '^pre-key-[0-9]+$') p WHERE rn > :keep {senders};\n"
        + ("" if dry_run else
           f"DELETE FROM :\"t\" WHERE {where} AND :\"kc\" IN (SELECT key FROM waops_drop);\n")
        + "SELECT t, count(*) FROM waops_drop GROUP BY t;\nCOMMIT;\n"
    )
    out = Psql(cfg.pg or {}).run(sql).decode()
    counts = {"session": 0, "pre-key": 0, "sender-key": 0}
    for line in out.splitlines():
        if "|" in line:
            t, n = line.split("|", 1)
            counts[t] = int(n)
    return counts


def retention_keep(backups: list[dict[str, Any]], keep: int) -> set[str]:
    """The ids retention keeps among `backups` (oldest first): the last `keep`, every pre-reset one, the
    newest verified, the newest verified linked and the newest linked. The off-host copies follow it too."""
    protected = {b["id"] for b in backups if b["summary"].get("reason") == "pre-reset"}
    for pick in (is_verified, is_restorable, lambda b: bool(b["summary"].get("creds_linked"))):
        # the newest verified one, and the newest that still holds linked creds (verified or not: a
        # verify mark can be missing for a reason that is no fault of the backup's): a run of backups
        # taken after a logout must not rotate the last good session out
        good = [b for b in backups if pick(b)]
        if good:
            protected.add(good[-1]["id"])
    return {b["id"] for b in backups[-keep:]} | protected


def do_prune(cfg: BotConfig, keep: int | None, dry_run: bool) -> dict[str, Any]:
    """Keep the last N; never the newest verified backup, never a pre-reset backup."""
    keep = cfg.backup_keep if keep is None else keep
    if keep < 1:
        raise AgentError(f"{cfg.name}: --keep must be at least 1, not {keep}", EXIT_USAGE)
    backups = list_backups(cfg)
    keep_ids = retention_keep(backups, keep)
    deleted = [b["id"] for b in backups if b["id"] not in keep_ids]
    cleaned: list[str] = []
    if not dry_run:
        cleaned = clean_tmp(cfg)
        for bid in deleted:
            shutil.rmtree(os.path.join(cfg.backup_dir, bid))
    return {"bot": cfg.name, "ok": True, "dry_run": dry_run, "deleted": deleted,
            "kept": sorted(keep_ids), "cleaned_tmp": cleaned}
