"""Writing one backup: auth folder tar and/or store dump, manifest, then an immediate verify."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import tarfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .archive import Sink, _read_regular, check_member
from .authdir import recover_auth
from .base import (
    AGENT_VERSION,
    AUTH_TAR,
    DB_DUMP,
    EXIT_USAGE,
    FORMAT_VERSION,
    MANIFEST,
    MAX_ENTRIES,
    MAX_MEMBER,
    REASONS,
    SQLITE_DB,
    VERIFY_MARK,
    AgentError,
    fsync_dir,
    iso,
    now_utc,
    sha256_file,
    write_json_file,
)
from .keys import creds_summary, device_fingerprint, key_type
from .library import library_info
from .locks import backup_root
from .pglayout import sql_export
from .pgstore import Psql
from .privdrop import BotChild
from .sqlitestore import write_sqlite_member
from .verify import verify_backup

if TYPE_CHECKING:
    from .config import BotConfig


def write_auth_tar(cfg: BotConfig, dest: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tar the auth folder (regular files and dirs only), hashing every member on the way. A child as the
    bot user reads the folder and streams a tar; root takes only safe names, regular files and dirs from
    it, and writes its own archive (root-owned members, fixed modes)."""
    entries: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    creds_raw: bytes | None = None
    sink = Sink(dest, cfg.age_recipient)
    child = BotChild(cfg, _child_tar_auth, cfg.auth_dir, stream="out")
    try:
        assert child.stream is not None
        with tarfile.open(fileobj=sink.hw, mode="w|", format=tarfile.GNU_FORMAT) as tar, \
                tarfile.open(fileobj=child.stream, mode="r|") as src:  # type: ignore[call-overload]
            for got in src:
                if check_member(got):
                    skipped.append(repr(got.name)[:256])  # never a name Baileys writes (control chars)
                    continue
                if len(entries) >= MAX_ENTRIES:
                    raise AgentError(f"{cfg.name}: auth folder has more than {MAX_ENTRIES} entries")
                rel = got.name.rstrip("/")
                ti = tarfile.TarInfo(rel)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = int(got.mtime) if 0 <= got.mtime < 1 << 33 else 0
                if got.isdir():
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o700
                    tar.addfile(ti)
                    entries[rel + "/"] = {"type": "dir"}
                    continue
                if got.size > MAX_MEMBER:
                    raise AgentError(f"{cfg.name}: {rel}: {got.size} bytes is too big for an auth file")
                f = src.extractfile(got)
                data = f.read() if f else b""
                if rel in entries:
                    raise AgentError(f"{cfg.name}: auth folder: {rel!r} twice")
                ti.size, ti.mode = len(data), 0o600
                tar.addfile(ti, io.BytesIO(data))
                entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                if rel == "creds.json":
                    creds_raw = data  # judge "linked" on the bytes in the archive, not a later read
            while child.stream.read(1 << 16):
                pass  # let the child finish writing
        walked = child.finish()
        plain_sha, plain_size = sink.hw.h.hexdigest(), sink.hw.size
        sink.close()
    except BaseException as e:
        child.kill()
        with contextlib.suppress(AgentError):
            child.finish()
        failure = sink.abort(e)
        if failure is not e:
            raise failure from None
        if isinstance(e, tarfile.TarError):
            raise AgentError(f"{cfg.name}: reading the auth folder failed: {e}") from None
        raise
    member: dict[str, Any] = {"kind": "auth-tar", "entries": entries,
                              "plain_sha256": plain_sha, "plain_size": plain_size,
                              "encrypted": bool(cfg.age_recipient)}
    extra = {"skipped": walked["skipped"] + skipped, "auth_present": walked["auth_present"], "creds_raw": creds_raw}
    return member, extra


def _child_tar_auth(out: BinaryIO, auth_dir: str) -> dict[str, Any]:
    """(as the bot) A tar of the auth folder's regular files and dirs on `out`."""
    skipped: list[str] = []
    present = os.path.isdir(auth_dir)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        if present:
            for rel, is_dir in walk_auth(auth_dir, skipped):
                full = os.path.join(auth_dir, rel)
                ti = tarfile.TarInfo(rel)
                if is_dir:
                    ti.type = tarfile.DIRTYPE
                    tar.addfile(ti)
                    continue
                data = _read_regular(full)
                if data is None:
                    skipped.append(rel)
                    continue
                with contextlib.suppress(OSError):
                    ti.mtime = int(os.stat(full, follow_symlinks=False).st_mtime)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    return {"skipped": [n[:256] for n in skipped[:100]], "auth_present": present}


def walk_auth(root: str, skipped: list[str]) -> Iterator[tuple[str, bool]]:
    """Relative paths under root, sorted, dirs before their content; links and specials skipped."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            items = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in items:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.is_dir(follow_symlinks=False):
                subdirs.append(rel)
                yield rel, True
            elif e.is_file(follow_symlinks=False):
                yield rel, False
            else:
                skipped.append(rel)  # symlink, fifo, socket, device: never part of an auth folder
        stack.extend(reversed(subdirs))


def write_db_dump(cfg: BotConfig, dest: str) -> tuple[dict[str, Any], Any]:
    """Export this bot's rows (session-scoped) as JSON lines {key, value}; returns member and creds."""
    assert cfg.pg is not None
    sink = Sink(dest, cfg.age_recipient)
    rows, creds, by_type = 0, None, {}
    proc = Psql(cfg.pg).popen_out(sql_export(cfg.pg))
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip(b"\n")
            if not line:
                continue
            doc = json.loads(line)
            if doc.get("key") == "creds":
                creds = doc.get("value")
            t = key_type(str(doc.get("key")))
            by_type[t] = by_type.get(t, 0) + 1
            sink.hw.write(line + b"\n")
            rows += 1
        proc.wait(timeout=60)
        assert proc.stderr is not None
        proc.stderr.seek(0)
        err = proc.stderr.read()
        if proc.returncode != 0:
            raise AgentError(Psql(cfg.pg).failure(err, proc.returncode, "export failed: "))
        plain_sha, plain_size = sink.hw.h.hexdigest(), sink.hw.size
        sink.close()
    except BaseException as e:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(5)
        failure = sink.abort(e)
        if failure is not e:
            raise failure from None
        raise
    member = {"kind": "db-jsonl", "rows": rows, "by_type": by_type, "plain_sha256": plain_sha,
              "plain_size": plain_size, "encrypted": bool(cfg.age_recipient),
              "table": cfg.pg["table"], "session": cfg.pg["session"]}
    return member, creds


def new_backup_id(reason: str) -> str:
    return f"{now_utc().strftime('%Y%m%dT%H%M%S')}Z-{reason}-{secrets.token_hex(3)}"


def clean_tmp(cfg: BotConfig) -> list[str]:
    """Remove leftovers of killed or failed runs (`.tmp-*` sets, `verify.json.tmp-*` files); only called
    under the bot lock, in root's own backup directory."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for n in os.listdir(cfg.backup_dir):
            d = os.path.join(cfg.backup_dir, n)
            if n.startswith(".tmp-"):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(n)
            elif not n.startswith(".") and os.path.isdir(d) and not os.path.islink(d):
                for m in os.listdir(d):
                    if m.startswith((VERIFY_MARK + ".tmp-", MANIFEST + ".tmp-")):
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(d, m))
                            removed.append(f"{n}/{m}")
    return removed


def do_backup(cfg: BotConfig, reason: str) -> dict[str, Any]:
    """Write one complete backup set (tmp dir + rename) and verify it. Caller holds the lock."""
    if reason not in REASONS:
        raise AgentError(f"bad reason {reason!r}: one of {', '.join(REASONS)}", EXIT_USAGE)
    backup_root(cfg)
    recovered = recover_auth(cfg)  # a restore killed mid-swap is rolled back before we look at the folder
    cleaned = clean_tmp(cfg)
    bid = new_backup_id(reason)
    tmp = os.path.join(cfg.backup_dir, f".tmp-{bid}")
    final = os.path.join(cfg.backup_dir, bid)
    started = time.monotonic()
    os.mkdir(tmp, 0o700)
    try:
        suffix = ".age" if cfg.age_recipient else ""
        members: dict[str, Any] = {}
        creds: Any = None
        creds_from = None
        auth_member, extra = write_auth_tar(cfg, os.path.join(tmp, AUTH_TAR + suffix))
        members[AUTH_TAR + suffix] = auth_member
        if cfg.auth_store == "files":
            if extra["creds_raw"] is not None:
                with contextlib.suppress(ValueError):
                    creds = json.loads(extra["creds_raw"])
                    creds = creds if isinstance(creds, dict) else None
            creds_from = "files"
        if cfg.pg is not None:
            db_member, creds = write_db_dump(cfg, os.path.join(tmp, DB_DUMP + suffix))
            members[DB_DUMP + suffix] = db_member
            creds_from = "postgres"
        if cfg.sqlite is not None:
            sq_member, creds = write_sqlite_member(cfg, os.path.join(tmp, SQLITE_DB + suffix))
            if sq_member is not None:
                members[SQLITE_DB + suffix] = sq_member
            creds_from = "sqlite"
        for name, m in members.items():
            if m["encrypted"]:  # the stored bytes are the ciphertext: hash what is on disk
                m["sha256"], m["size"] = sha256_file(os.path.join(tmp, name))
            else:
                m["sha256"], m["size"] = m["plain_sha256"], m["plain_size"]
        lib = library_info(cfg)
        manifest = {
            "format": FORMAT_VERSION, "id": bid, "bot": cfg.name, "reason": reason,
            "created_at": iso(now_utc()), "host": socket.gethostname(), "agent_version": AGENT_VERSION,
            "auth_store": cfg.auth_store, "library": {"package": cfg.library_package,
                                                      "version": lib.get("installed")},
            "release": lib.get("release"),
            "creds_linked": creds_summary(creds)["linked"] if creds is not None else False,
            "device": device_fingerprint(creds),
            "creds_present": creds is not None, "creds_from": creds_from,
            "auth_present": extra["auth_present"], "skipped": extra["skipped"][:100],  # summary stays small
            "encrypted": bool(cfg.age_recipient),
            "age_recipient": cfg.age_recipient,
            "members": members,
        }
        write_json_file(os.path.join(tmp, MANIFEST), manifest)
        fsync_dir(tmp)
        os.rename(tmp, final)  # the backup exists only once it is complete
        fsync_dir(cfg.backup_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise AgentError(f"{cfg.name}: backup failed, nothing kept: {e.strerror or e}") from None
        raise
    result = verify_backup(cfg, final)
    return {"bot": cfg.name, "ok": result["ok"], "id": bid, "path": final, "reason": reason,
            "verified": result["ok"], "verify_level": result["level"], "errors": result["errors"],
            "entries": len(auth_member["entries"]),
            "rows": members.get(DB_DUMP + suffix, members.get(SQLITE_DB + suffix, {})).get("rows"),
            "creds_linked": manifest["creds_linked"], "cleaned_tmp": cleaned, "recovered": recovered,
            "seconds": round(time.monotonic() - started, 3)}
