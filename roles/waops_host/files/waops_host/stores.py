"""Reading and writing all keys of any store (files, PostgreSQL, SQLite) and `migrate` between them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import time
from typing import Any

from .archive import check_member, safe_member_name
from .authdir import _child_swap, recover_auth
from .backup import _child_tar_auth, do_backup
from .base import AUTH_STORES, EXIT_USAGE, MAX_ENTRIES, MAX_MEMBER, AgentError
from .config import BotConfig
from .keys import creds_summary, key_type
from .pglayout import sql_export
from .pgstore import Psql
from .privdrop import BotChild, as_bot
from .process import count_instances
from .restore import _child_extract, restore_db
from .sqlitestore import _child_sqlite_put, _sqlite_rows, _sqlite_uri, check_sqlite_file, root_tempdir, sqlite_copy

# `migrate --to STORE`: the bot's keys copied from its store to another one (files, sqlite, postgres)
# without a new link. The playbook stops the bot, runs this, switches the bot's env and agent config to
# the new store and starts it; the old store is left as it was, so going back is only a switch.
# Key <-> file name: Baileys' files store writes `/` as `__` and `:` as `-`; sender-key names carry
# `::` separators, which come back from their files as `::` (`--`); no other key holds a `:`.


SQL_CREATE_TABLE = (  # the session table of docs/CONTRACTS.md, as the bots create it
    "CREATE TABLE IF NOT EXISTS :\"t\" (session text NOT NULL, key text NOT NULL, value jsonb NOT NULL, "
    "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (session, key));\n"
)


def key_file_name(key: str) -> str:
    return key.replace("/", "__").replace(":", "-") + ".json"


def file_key(name: str) -> str:
    key = name[:-5].replace("__", "/")
    if key.startswith("sender-key-") and not key.startswith("sender-key-memory-"):
        key = key.replace("--", "::")
    return key


def _parse_value(raw: bytes | str) -> Any:
    return json.loads(raw)


def read_files_keys(cfg: BotConfig) -> tuple[dict[str, Any], list[str]]:
    """Top-level `*.json` files of the auth folder, read as the bot (its tar stream, checked by root)."""
    keys: dict[str, Any] = {}
    skipped: list[str] = []
    child = BotChild(cfg, _child_tar_auth, cfg.auth_dir, stream="out")
    try:
        assert child.stream is not None
        with tarfile.open(fileobj=child.stream, mode="r|") as src:  # type: ignore[call-overload]
            for ti in src:
                if check_member(ti) or not ti.isreg() or "/" in ti.name or not ti.name.endswith(".json"):
                    continue
                if ti.size > MAX_MEMBER or len(keys) >= MAX_ENTRIES:
                    raise AgentError(f"{cfg.name}: auth folder too big to migrate")
                f = src.extractfile(ti)
                try:
                    keys[file_key(ti.name)] = _parse_value(f.read() if f else b"")
                except ValueError:
                    skipped.append(ti.name[:256])  # a torn file: Baileys could not read it either
            while child.stream.read(1 << 16):
                pass
    except BaseException as e:
        child.kill()
        with contextlib.suppress(AgentError):
            child.finish()
        if isinstance(e, tarfile.TarError):
            raise AgentError(f"{cfg.name}: reading the auth folder failed: {e}") from None
        raise
    child.finish()
    return keys, skipped


def read_pg_keys(cfg: BotConfig) -> tuple[dict[str, Any], list[str]]:
    assert cfg.pg is not None
    keys: dict[str, Any] = {}
    proc = Psql(cfg.pg).popen_out(sql_export(cfg.pg))
    assert proc.stdout is not None and proc.stderr is not None
    for raw in proc.stdout:
        if raw.strip():
            doc = json.loads(raw)
            keys[str(doc["key"])] = doc["value"]
    proc.wait(timeout=60)
    if proc.returncode != 0:
        proc.stderr.seek(0)
        lines = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        raise AgentError(f"postgres export failed: {lines[-1] if lines else proc.returncode}")
    return keys, []


def read_sqlite_keys(cfg: BotConfig) -> tuple[dict[str, Any], list[str]]:
    """An online-backup copy of the bot's database, checked by root, read on root's copy."""
    import sqlite3

    assert cfg.sqlite is not None
    keys: dict[str, Any] = {}
    skipped: list[str] = []
    with root_tempdir() as td:
        copy = sqlite_copy(cfg, td)
        if copy is None:
            return keys, skipped
        check_sqlite_file(copy, cfg.sqlite["table"])
        conn = sqlite3.connect(_sqlite_uri(copy, "ro"), uri=True)
        try:
            conn.execute("PRAGMA trusted_schema = OFF")
            for k, v in _sqlite_rows(conn, cfg.sqlite["table"]):
                try:
                    keys[k] = _parse_value(v)
                except ValueError:
                    skipped.append(k[:256])
        finally:
            conn.close()
    return keys, skipped


def read_store_keys(cfg: BotConfig) -> tuple[dict[str, Any], list[str]]:
    if cfg.auth_store == "postgres":
        return read_pg_keys(cfg)
    if cfg.auth_store == "sqlite":
        return read_sqlite_keys(cfg)
    return read_files_keys(cfg)


def write_store_keys(cfg: BotConfig, keys: dict[str, Any]) -> None:
    """Replace the whole content of `cfg`'s store with `keys` (this bot's rows or files only)."""
    import sqlite3

    with root_tempdir() as td:
        if cfg.auth_store == "postgres":
            path = os.path.join(td, "keys.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for k, v in keys.items():
                    f.write(json.dumps({"key": k, "value": v}) + "\n")
            Psql(cfg.pg or {}).run(SQL_CREATE_TABLE)  # a bot that never ran on postgres has no table yet
            restore_db(cfg, path, {"encrypted": False})
        elif cfg.auth_store == "sqlite":
            assert cfg.sqlite is not None
            path = os.path.join(td, "new.sqlite")
            conn = sqlite3.connect(path)
            conn.execute(f'CREATE TABLE "{cfg.sqlite["table"]}" (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
            conn.executemany(f'INSERT INTO "{cfg.sqlite["table"]}" (key, value) VALUES (?, ?)',
                             [(k, json.dumps(v)) for k, v in keys.items()])
            conn.commit()
            conn.close()
            child = BotChild(cfg, _child_sqlite_put, cfg.sqlite["path"], stream="in")
            try:
                assert child.stream is not None
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, child.stream)
            except BaseException:
                child.kill()
                with contextlib.suppress(AgentError):
                    child.finish()
                raise
            child.finish()
        else:
            child = BotChild(cfg, _child_extract, cfg.auth_dir, stream="in")
            try:
                assert child.stream is not None
                with tarfile.open(fileobj=child.stream, mode="w|", format=tarfile.GNU_FORMAT) as out:  # type: ignore[call-overload]
                    for k, v in keys.items():
                        data = json.dumps(v).encode()
                        ti = tarfile.TarInfo(key_file_name(k))
                        if safe_member_name(ti.name) or "/" in ti.name:
                            raise AgentError(f"{cfg.name}: key {k[:80]!r} has no safe file name")
                        ti.size, ti.mtime = len(data), int(time.time())
                        out.addfile(ti, io.BytesIO(data))
            except BaseException:
                child.kill()
                with contextlib.suppress(AgentError):
                    child.finish()
                recover_auth(cfg)
                raise
            staged = child.finish()
            try:
                as_bot(cfg, _child_swap, staged[0], cfg.auth_dir)
            finally:
                recover_auth(cfg)


def expected_keys(keys: dict[str, Any], store: str) -> dict[str, Any]:
    """What `keys` read back as from `store` (file names are lossy for a `:` outside sender keys)."""
    return {file_key(key_file_name(k)): v for k, v in keys.items()} if store == "files" else keys


def key_counts(keys: dict[str, Any]) -> dict[str, int]:
    by_type: dict[str, int] = {}
    for k in keys:
        t = key_type(k)
        by_type[t] = by_type.get(t, 0) + 1
    return dict(sorted(by_type.items()))


def do_migrate(cfg: BotConfig, to: str) -> dict[str, Any]:
    """Copy the session to store `to`, check it reads back the same. Caller holds the lock."""
    if to not in AUTH_STORES:
        raise AgentError(f"--to must be one of {', '.join(AUTH_STORES)}", EXIT_USAGE)
    if to == cfg.auth_store:
        raise AgentError(f"{cfg.name}: the bot already uses the {to} store", EXIT_USAGE)
    target = BotConfig({**cfg.doc, "auth_store": to}, cfg.path)  # postgres: the config's postgres section
    running = count_instances(cfg)
    if running:
        raise AgentError(f"{cfg.name}: {running} bot process(es) running: stop the bot before migrating")
    pre = do_backup(cfg, "pre-migrate")
    if not pre["ok"]:
        raise AgentError(f"{cfg.name}: pre-migrate backup {pre['id']} did not verify; nothing migrated")
    keys, skipped = read_store_keys(cfg)
    creds = creds_summary(keys.get("creds"))
    if not creds["linked"]:
        raise AgentError(f"{cfg.name}: the {cfg.auth_store} store holds no linked creds; nothing to migrate")
    write_store_keys(target, keys)
    got, _ = read_store_keys(target)
    want = expected_keys(keys, to)
    if got != want:
        missing = sorted(set(want) - set(got))[:5]
        differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        raise AgentError(f"{cfg.name}: the {to} store does not read back the same keys "
                         f"({len(got)} of {len(want)}; missing {missing}, different {differ})")
    return {"bot": cfg.name, "ok": True, "from": cfg.auth_store, "to": to, "pre_migrate_backup": pre["id"],
            "keys": len(got), "by_type": key_counts(got), "source_by_type": key_counts(keys),
            "creds_linked": creds_summary(got.get("creds"))["linked"], "me_id": creds["me_id"],
            "skipped": skipped[:100]}


def do_carry(target: BotConfig, source: BotConfig) -> dict[str, Any]:
    """Copy the session of `source` (an adopted bot's own store, its config kept aside by the move into
    the managed layout) into `target`'s store (the same bot, managed), then check it reads back the same.
    Both must be stopped; a verified backup of the source comes first. The source is only read."""
    if source.name != target.name or not source.adopted or target.adopted:
        raise AgentError(f"{target.name}: carry copies an adopted bot's session into its managed layout", EXIT_USAGE)
    running = count_instances(source) + count_instances(target)
    if running:
        raise AgentError(f"{target.name}: {running} bot process(es) running: stop the bot before the copy")
    pre = do_backup(source, "pre-migrate")
    if not pre["ok"]:
        raise AgentError(f"{target.name}: backup {pre['id']} of the adopted bot did not verify; nothing copied")
    keys, skipped = read_store_keys(source)
    creds = creds_summary(keys.get("creds"))
    if not creds["linked"]:
        raise AgentError(f"{target.name}: the adopted {source.auth_store} store holds no linked creds; "
                         "nothing to carry over")
    write_store_keys(target, keys)
    got, _ = read_store_keys(target)
    want = expected_keys(keys, target.auth_store)
    if got != want:
        missing = sorted(set(want) - set(got))[:5]
        raise AgentError(f"{target.name}: the managed {target.auth_store} store does not read back the same keys "
                         f"({len(got)} of {len(want)}; missing {missing})")
    return {"bot": target.name, "ok": True, "from": f"adopted {source.auth_store}", "to": target.auth_store,
            "pre_migrate_backup": pre["id"], "keys": len(got), "by_type": key_counts(got),
            "creds_linked": creds_summary(got.get("creds"))["linked"], "me_id": creds["me_id"],
            "skipped": skipped[:100]}
