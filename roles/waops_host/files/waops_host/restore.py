"""Choosing and restoring a backup, and resetting a session (both after a verified backup)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
from typing import TYPE_CHECKING, Any, BinaryIO

from .archive import HashReader, _read_regular, check_member, iter_tar, open_plain
from .authdir import _child_swap, recover_auth
from .backup import do_backup
from .base import MANIFEST, MAX_MANIFEST, MAX_SMALL_JSON, AgentError, fsync_dir, log, read_small_json
from .catalog import is_verified, list_backups
from .keys import device_fingerprint
from .pglayout import pg_insert, sql_delete
from .pgstore import Psql, copy_text_escape
from .privdrop import BotChild, as_bot
from .process import count_instances
from .sqlitestore import _child_sqlite_clear, restore_sqlite
from .verify import verify_backup

if TYPE_CHECKING:
    from .config import BotConfig


def find_backup(cfg: BotConfig, bid: str | None, latest_verified: bool) -> dict[str, Any]:
    backups = list_backups(cfg)
    if bid:
        for b in backups:
            if b["id"] == bid:
                return b
        raise AgentError(f"{cfg.name}: no complete backup {bid!r} in {cfg.backup_dir}")
    pool = restore_pool(cfg, backups) if latest_verified else list(reversed(backups))
    if not pool:
        raise AgentError(f"{cfg.name}: no {'verified backup of the linked device' if latest_verified else 'backup'}"
                         " to use")
    return pool[0]


def is_restorable(b: dict[str, Any]) -> bool:
    return is_verified(b) and bool(b["summary"].get("creds_linked"))


# Snapshots of a state under repair: taken because it was broken, so never what `--latest-verified` brings back.
SNAPSHOT_REASONS = ("pre-reset", "pre-restore")


def live_device(cfg: BotConfig) -> str | None:
    """The device the live creds.json is linked as (files store), None when it is missing or unreadable."""
    if cfg.auth_store != "files":
        return None
    try:
        raw = _read_regular(os.path.join(cfg.auth_dir, "creds.json"))
        return device_fingerprint(json.loads(raw)) if raw and len(raw) <= MAX_SMALL_JSON else None
    except (AgentError, OSError, ValueError):
        return None


def restore_pool(cfg: BotConfig, backups: list[dict[str, Any]], device: str | None = None) -> list[dict[str, Any]]:
    """What `restore --latest-verified` may bring back, best first (by the recorded verify; restore verifies
    again). A reset abandons every device before it: a pre-reset backup's device was revoked by the
    server (401) or given up, so neither it nor anything older than the newest reset is a candidate. When
    the device linked now is known (live creds, or `device`), only its backups are."""
    resets = [b for b in backups if b["summary"].get("reason") == "pre-reset"]
    retired = {b["summary"].get("device") for b in resets} - {None}
    last_reset = max((str(b["summary"].get("created_at")) for b in resets), default="")
    current = device or live_device(cfg)
    pool = []
    for b in reversed(backups):
        m = b["summary"]
        if not is_restorable(b) or m.get("reason") in SNAPSHOT_REASONS or m.get("device") in retired:
            continue
        if last_reset and str(m.get("created_at")) <= last_reset:
            continue
        if current and m.get("device") and m.get("device") != current:
            continue
        pool.append(b)
    return pool




def do_restore(cfg: BotConfig, bid: str | None, latest_verified: bool) -> dict[str, Any]:
    """Verify, back up the current state, extract into a sibling and swap. Caller holds the lock.
    With --latest-verified a backup that is refused (does not verify, unsafe member) is skipped and the
    next candidate is tried, so a planted or broken newest backup never hides a good one."""
    if bid or not latest_verified:
        return _restore_one(cfg, find_backup(cfg, bid, latest_verified), None)
    refused: list[dict[str, str]] = []
    pre: dict[str, Any] | None = None
    for b in restore_pool(cfg, list_backups(cfg)):
        try:
            out = _restore_one(cfg, b, pre, refusals=True)
        except RefusedBackup as e:
            refused.append({"id": b["id"], "why": str(e)})
            log(f"{cfg.name}: skipped backup {b['id']}: {e}")
            pre = e.pre or pre
            continue
        out["refused"] = refused
        return out
    why = "; ".join(f"{r['id']}: {r['why']}" for r in refused[:3])
    raise AgentError(f"{cfg.name}: no verified backup of the linked device to restore"
                     + (f" ({len(refused)} refused: {why})" if refused else ""))


class RefusedBackup(AgentError):
    """This backup cannot be restored; nothing was written. `pre` is the pre-restore backup if taken."""

    def __init__(self, msg: str, pre: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.pre = pre


def _restore_one(cfg: BotConfig, b: dict[str, Any], pre: dict[str, Any] | None,
                 refusals: bool = False) -> dict[str, Any]:
    def refuse(msg: str) -> AgentError:
        return RefusedBackup(msg, pre) if refusals else AgentError(f"{cfg.name}: {msg}")

    check = verify_backup(cfg, b["path"], record=True)
    if not check["ok"]:
        raise refuse(f"refusing to restore {b['id']}: " + "; ".join(check["errors"][:5]))
    if check["level"] != "full":
        raise refuse(f"refusing to restore {b['id']}: encrypted and no identity to check it")
    if pre is None:
        pre = do_backup(cfg, "pre-restore")
        if not pre["ok"]:
            raise AgentError(f"{cfg.name}: pre-restore backup {pre['id']} did not verify; nothing restored")
    m = read_small_json(os.path.join(b["path"], MANIFEST), MAX_MANIFEST)
    members = {mem.get("kind"): (os.path.join(b["path"], name), mem) for name, mem in m["members"].items()}
    if "db-jsonl" in members and cfg.pg is None:
        raise refuse(f"backup {b['id']} has DB rows but auth_store is not postgres")
    if "sqlite-db" in members and cfg.sqlite is None:
        raise refuse(f"backup {b['id']} has a SQLite database but auth_store is not sqlite")
    restored: dict[str, Any] = {}
    # Order keeps the window small: extract the files beside the live folder (the slow part, the one
    # that can fail on a full disk), then replace the rows in one transaction, then two renames.
    try:
        staged = extract_auth(cfg, *members["auth-tar"]) if "auth-tar" in members else None
    except AgentError as e:  # nothing was written: the auth folder is as it was
        raise refuse(f"refusing to restore {b['id']}: {e}") from None
    try:
        if "db-jsonl" in members:
            restored["rows"] = restore_db(cfg, *members["db-jsonl"])
        if "sqlite-db" in members:
            restored["rows"] = restore_sqlite(cfg, *members["sqlite-db"])
        if staged:
            as_bot(cfg, _child_swap, staged[0], cfg.auth_dir)
            restored["files"] = staged[1]
    finally:
        if staged:
            recover_auth(cfg)  # removes the staged folder when the swap did not happen
    out = {"bot": cfg.name, "ok": True, "id": b["id"], "device": b["summary"].get("device"),
           "pre_restore_backup": pre["id"], **restored}
    running = count_instances(cfg)
    if running:  # the playbook stops the bot first; a live socket would overwrite what we restored
        out["warning"] = f"{running} bot process(es) still running on this auth folder"
        log(f"{cfg.name}: warning: {out['warning']}")
    return out


def extract_auth(cfg: BotConfig, fpath: str, mem: dict[str, Any]) -> tuple[str, int]:
    """Extract into a temp sibling of the auth folder; returns (that dir, files written). Root checks
    every member of its own archive and streams the checked ones to a child that writes them as the bot
    user, so nothing in the bot's directories is ever created or followed by root."""
    entries = mem.get("entries") or {}
    child = BotChild(cfg, _child_extract, cfg.auth_dir, stream="in")
    try:
        assert child.stream is not None
        with tarfile.open(fileobj=child.stream, mode="w|", format=tarfile.GNU_FORMAT) as out:  # type: ignore[call-overload]
            def on_file(ti: tarfile.TarInfo, data: bytes | None) -> None:
                bad = check_member(ti)  # checked again: the archive could change after verify
                if bad:
                    raise AgentError(f"unsafe member {bad}")
                if ti.isreg():
                    want = entries.get(ti.name) or {}
                    if data is None or hashlib.sha256(data).hexdigest() != want.get("sha256"):
                        raise AgentError(f"{ti.name!r}: checksum mismatch during restore")
                clean = tarfile.TarInfo(ti.name.rstrip("/"))
                clean.type, clean.mtime = ti.type, int(ti.mtime) if 0 <= ti.mtime < 1 << 33 else 0
                clean.size = len(data or b"")
                out.addfile(clean, io.BytesIO(data) if ti.isreg() and data is not None else None)

            with open_plain(cfg, fpath, bool(mem.get("encrypted"))) as src:
                iter_tar(HashReader(src), on_file)
        staged = child.finish()
    except BaseException as e:
        child.kill()
        with contextlib.suppress(AgentError):
            child.finish()
        recover_auth(cfg)  # the half-written staging folder goes
        if isinstance(e, (OSError, tarfile.TarError)):
            raise AgentError(f"{cfg.name}: restore failed, auth folder unchanged: {e}") from None
        raise
    return staged[0], staged[1]


def _child_extract(inp: BinaryIO, auth_dir: str) -> tuple[str, int]:
    """(as the bot) Write the tar on `inp` into a new sibling of the auth folder."""
    parent, base = os.path.split(auth_dir)
    tmp = os.path.join(parent, f".{base}.restore-{os.getpid()}-{secrets.token_hex(3)}")
    os.mkdir(tmp, 0o700)
    count = 0
    with tarfile.open(fileobj=inp, mode="r|") as tar:
        for ti in tar:
            if check_member(ti):  # root sent only checked members; stay strict anyway
                raise AgentError(f"unsafe member {ti.name!r}")
            target = os.path.join(tmp, ti.name.rstrip("/"))
            if ti.isdir():
                os.makedirs(target, 0o700, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
            f = tar.extractfile(ti)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as w:
                w.write(f.read() if f else b"")
                w.flush()
                if ti.mtime:
                    os.utime(w.fileno(), (ti.mtime, ti.mtime))
                os.fsync(w.fileno())
            count += 1
    os.chmod(tmp, 0o700)
    fsync_dir(tmp)
    return tmp, count


def restore_db(cfg: BotConfig, fpath: str, mem: dict[str, Any]) -> int:
    """Replace this bot's rows in one transaction: delete by session, insert the dump."""
    chunks = [
        "BEGIN;\nCREATE TEMP TABLE waops_restore (line text) ON COMMIT DROP;\n"
        "COPY waops_restore (line) FROM STDIN;\n"
    ]
    rows = 0
    with open_plain(cfg, fpath, bool(mem.get("encrypted"))) as src:
        for raw in src:
            line = raw.decode("utf-8").rstrip("\n")
            if line:
                json.loads(line)  # refuse anything that is not a JSON row before touching the DB
                chunks.append(copy_text_escape(line) + "\n")
                rows += 1
    chunks.append("\\.\n")
    pg = cfg.pg or {}
    chunks.append(sql_delete(pg))
    chunks.append(pg_insert(pg, "(line::jsonb)->>'key'", "(line::jsonb)->'value'") + " FROM waops_restore;\nCOMMIT;\n")
    Psql(cfg.pg or {}, timeout=120).run("".join(chunks).encode())
    return rows


def do_reset(cfg: BotConfig) -> dict[str, Any]:
    pre = do_backup(cfg, "pre-reset")
    if not pre["ok"]:
        raise AgentError(f"{cfg.name}: pre-reset backup {pre['id']} did not verify; nothing reset")
    removed = as_bot(cfg, _child_clear_auth, cfg.auth_dir)
    rows = None
    if cfg.pg is not None:
        out = Psql(cfg.pg).run("WITH d AS (" + sql_delete(cfg.pg).strip().rstrip(";") + " RETURNING 1) "
                               "SELECT count(*) FROM d;\n")
        rows = int(out.strip() or 0)
    if cfg.sqlite is not None:
        rows = as_bot(cfg, _child_sqlite_clear, cfg.sqlite["path"], cfg.sqlite["table"])
    return {"bot": cfg.name, "ok": True, "pre_reset_backup": pre["id"], "files_removed": removed,
            "rows_deleted": rows}


def _child_clear_auth(_: None, auth_dir: str) -> int:
    """(as the bot) Empty the auth folder, keeping the folder itself."""
    removed = 0
    if os.path.isdir(auth_dir) and not os.path.islink(auth_dir):
        with os.scandir(auth_dir) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed += 1
    return removed
