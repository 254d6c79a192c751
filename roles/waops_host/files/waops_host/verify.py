"""Verifying a backup: every member's checksum and size recomputed against its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from typing import TYPE_CHECKING, Any

from .archive import HashReader, check_member, iter_lines, iter_tar, open_plain, safe_member_name
from .base import (
    MANIFEST,
    MAX_MANIFEST,
    VERIFY_MARK,
    AgentError,
    iso,
    now_utc,
    read_small_json,
    sha256_file,
    write_json_file,
)
from .catalog import manifest_summary
from .sqlitestore import _verify_sqlite

if TYPE_CHECKING:
    from .config import BotConfig


def verify_backup(cfg: BotConfig, path: str, record: bool = True) -> dict[str, Any]:
    """Recompute every checksum; also check every archive member is listed and safe to restore."""
    errors: list[str] = []
    level = "full"
    if record:  # under the lock: a verify.json tmp left by a failed write (full disk) is no member
        for n in os.listdir(path):
            if n.startswith(VERIFY_MARK + ".tmp-"):
                os.unlink(os.path.join(path, n))
    try:
        m = read_small_json(os.path.join(path, MANIFEST), MAX_MANIFEST)
        if not isinstance(m, dict) or not isinstance(m.get("members"), dict):
            raise ValueError("manifest has no members")
    except (OSError, ValueError) as e:
        return _record(path, {"ok": False, "level": "none", "errors": [f"manifest: {e}"]}, record)
    summary = manifest_summary(m)
    if m.get("bot") != cfg.name:
        errors.append(f"manifest is for bot {m.get('bot')!r}, not {cfg.name!r}")
    on_disk = {n for n in os.listdir(path) if n not in (MANIFEST, VERIFY_MARK)}
    for extra in sorted(on_disk - set(m["members"])):
        errors.append(f"{extra}: file not listed in the manifest")
    for name, mem in m["members"].items():
        if safe_member_name(name) or "/" in name:
            errors.append(f"{name!r}: bad member name")
            continue
        fpath = os.path.join(path, name)
        try:
            sha, size = sha256_file(fpath)
        except OSError as e:
            errors.append(f"{name}: {e.strerror or e}")
            continue
        if sha != mem.get("sha256") or size != mem.get("size"):
            errors.append(f"{name}: checksum mismatch")
            continue
        encrypted = bool(mem.get("encrypted"))
        if encrypted and not (cfg.age_identity_file and os.path.exists(cfg.age_identity_file)):
            level = "ciphertext"  # stored bytes proven intact; the content needs the identity
            continue
        try:
            with open_plain(cfg, fpath, encrypted) as src:
                hr = HashReader(src)
                if mem.get("kind") == "auth-tar":
                    errors.extend(_verify_tar(hr, mem.get("entries") or {}))
                elif mem.get("kind") == "sqlite-db":
                    errors.extend(_verify_sqlite(hr, mem))
                else:
                    errors.extend(_verify_jsonl(hr, mem))
                hr.drain()
            if hr.h.hexdigest() != mem.get("plain_sha256") or hr.size != mem.get("plain_size"):
                errors.append(f"{name}: plaintext checksum mismatch")
        except (AgentError, OSError, tarfile.TarError, ValueError, EOFError) as e:
            errors.append(f"{name}: {e}")
    return _record(path, {"ok": not errors, "level": level, "errors": errors[:50], "summary": summary}, record)


def _verify_tar(hr: HashReader, entries: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()

    def on_file(ti: tarfile.TarInfo, data: bytes | None) -> None:
        bad = check_member(ti)
        if bad:
            errors.append(f"unsafe member {bad}")
            return
        key = ti.name.rstrip("/") + "/" if ti.isdir() else ti.name
        if key in seen:
            errors.append(f"{ti.name!r}: duplicate member")
        seen.add(key)
        want = entries.get(key)
        if want is None:
            errors.append(f"{ti.name!r}: member not listed in the manifest")
        elif data is not None and (hashlib.sha256(data).hexdigest() != want.get("sha256")
                                   or len(data) != want.get("size")):
            errors.append(f"{ti.name!r}: member checksum mismatch")

    iter_tar(hr, on_file)
    for missing in sorted(set(entries) - seen)[:20]:
        errors.append(f"{missing!r}: listed in the manifest but not in the archive")
    return errors


def _verify_jsonl(hr: HashReader, mem: dict[str, Any]) -> list[str]:
    rows = 0
    for raw in iter_lines(hr):
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str) or "value" not in doc:
            return ["db dump: malformed row"]
        rows += 1
    return [] if rows == mem.get("rows") else [f"db dump: {rows} rows, manifest says {mem.get('rows')}"]


def _record(path: str, result: dict[str, Any], record: bool) -> dict[str, Any]:
    result["verified_at"] = iso(now_utc())
    if record:
        try:
            write_json_file(os.path.join(path, VERIFY_MARK), result)
        except OSError as e:  # a verify nobody can see later is a failed verify
            raise AgentError(f"{os.path.basename(path)}: writing {VERIFY_MARK} failed: {e.strerror or e}") from None
    return result
