"""The SQLite auth store: online-backup copies, checks of an untrusted database, restore, prune."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from .archive import HashReader, Sink, open_plain
from .base import AgentError, fsync_dir, iso
from .keys import creds_summary, key_type
from .privdrop import BotChild, as_bot

if TYPE_CHECKING:
    from .config import BotConfig


# One database file per bot, written by the bot (better-sqlite3, WAL), table `<table>(key TEXT PRIMARY KEY,
# value TEXT)` with Baileys' key names and BufferJSON values. The file is the bot user's: every open of
# the live file happens in a child as the bot. What the child sends root (an online-backup copy) is
# untrusted: root writes it to a file in its own temp dir and checks it with PRAGMA integrity_check before
# it is stored or restored.

SQLITE_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_SQLITE = 512 << 20  # a session database is a few MB; the child holds one copy in memory
SQLITE_STEPS = 50_000_000  # VM steps root spends checking an untrusted database before giving up


def _sqlite_uri(path: str, mode: str) -> str:
    import urllib.parse

    return f"file:{urllib.parse.quote(path)}?mode={mode}"


def _sqlite_rows(conn: Any, table: str) -> Iterator[tuple[str, str]]:
    """(key, value) of the auth table; a missing table is an empty store."""
    kind = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    if kind is None:
        return
    if kind[0] != "table":
        raise AgentError(f"sqlite: {table} is a {kind[0]}, not a table")
    for k, v in conn.execute(f'SELECT key, value FROM "{table}"'):  # name checked by SQLITE_TABLE_RE
        yield str(k), v if isinstance(v, str) else bytes(v or b"").decode("utf-8", "replace")


def sqlite_summary(conn: Any, table: str) -> dict[str, Any]:
    """Rows by key type and the creds summary of an open database."""
    by_type: dict[str, int] = {}
    creds: dict[str, Any] = {"present": False, "parses": False, "linked": False, "me_id": None}
    creds_doc = None
    for k, v in _sqlite_rows(conn, table):
        t = key_type(k)
        by_type[t] = by_type.get(t, 0) + 1
        if k == "creds":
            creds["present"] = True
            with contextlib.suppress(ValueError):
                creds_doc = json.loads(v)
                creds.update(creds_summary(creds_doc))
    return {"rows": sum(by_type.values()), "by_type": dict(sorted(by_type.items())), "creds": creds,
            "creds_doc": creds_doc}


def check_sqlite_file(path: str, table: str) -> dict[str, Any]:
    """(root, on its own copy) PRAGMA integrity_check, then the summary. The file came from the bot user:
    its schema is not trusted (no triggers or views run), and the work is bounded."""
    import sqlite3

    try:
        conn = sqlite3.connect(_sqlite_uri(path, "ro"), uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise AgentError(f"sqlite: cannot open the copy: {e}") from None
    steps = [0]

    def budget() -> int:
        steps[0] += 1
        return 1 if steps[0] * 1000 > SQLITE_STEPS else 0

    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA cell_size_check = ON")
        conn.set_progress_handler(budget, 1000)
        res = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        if res != ["ok"]:
            raise AgentError("sqlite: integrity_check: " + "; ".join(str(r) for r in res)[:500])
        return sqlite_summary(conn, table)
    except sqlite3.Error as e:
        raise AgentError(f"sqlite: the copy is not a sound database: {e}") from None
    finally:
        conn.close()


@contextlib.contextmanager
def root_tempdir() -> Iterator[str]:
    """A fresh 0700 directory of root's (mkdtemp: a new name nobody else can have made)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="waops-sqlite-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _copy_bounded(src: Any, dest: str, limit: int) -> int:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise AgentError(f"sqlite: database copy over {limit >> 20} MiB")
            out.write(chunk)
    return size


def _child_sqlite_dump(out: BinaryIO, path: str) -> dict[str, Any]:
    """(as the bot) SQLite's online backup API copies the live database into memory, page by page under
    one read transaction (a consistent snapshot while the bot writes); the copy goes to root on `out`."""
    import sqlite3

    if not os.path.exists(path):
        return {"present": False}
    try:
        src = sqlite3.connect(_sqlite_uri(path, "ro"), uri=True, timeout=30)
        mem = sqlite3.connect(":memory:")
        try:
            src.backup(mem)
            data = mem.serialize()
        finally:
            src.close()
            mem.close()
    except sqlite3.Error as e:
        raise AgentError(f"sqlite: reading {path} failed: {e}") from None
    if len(data) > MAX_SQLITE:
        raise AgentError(f"sqlite: {path} is over {MAX_SQLITE >> 20} MiB")
    out.write(data)
    return {"present": True, "size": len(data)}


def sqlite_copy(cfg: BotConfig, td: str) -> str | None:
    """The bot's database copied (online backup, as the bot) into root's dir `td`; None: no database."""
    assert cfg.sqlite is not None
    copy = os.path.join(td, "copy.sqlite")
    child = BotChild(cfg, _child_sqlite_dump, cfg.sqlite["path"], stream="out")
    try:
        assert child.stream is not None
        _copy_bounded(child.stream, copy, MAX_SQLITE)
    except BaseException:
        child.kill()
        with contextlib.suppress(AgentError):
            child.finish()
        raise
    got = child.finish()  # the child's own error (not a database, unreadable) ends here
    return copy if got.get("present") else None


def write_sqlite_member(cfg: BotConfig, dest: str) -> tuple[dict[str, Any] | None, Any]:
    """Back up the bot's database; returns (member or None when there is no database, creds doc)."""
    assert cfg.sqlite is not None
    with root_tempdir() as td:
        copy = sqlite_copy(cfg, td)
        if copy is None:
            return None, None
        summary = check_sqlite_file(copy, cfg.sqlite["table"])
        sink = Sink(dest, cfg.age_recipient)
        try:
            with open(copy, "rb") as f:
                while chunk := f.read(1 << 20):
                    sink.hw.write(chunk)
            plain_sha, plain_size = sink.hw.h.hexdigest(), sink.hw.size
            sink.close()
        except BaseException as e:
            failure = sink.abort(e)
            if failure is not e:
                raise failure from None
            raise
    member = {"kind": "sqlite-db", "rows": summary["rows"], "by_type": summary["by_type"],
              "table": cfg.sqlite["table"], "integrity": "ok", "plain_sha256": plain_sha,
              "plain_size": plain_size, "encrypted": bool(cfg.age_recipient)}
    return member, summary["creds_doc"]


def _verify_sqlite(hr: HashReader, mem: dict[str, Any]) -> list[str]:
    with root_tempdir() as td:
        copy = os.path.join(td, "verify.sqlite")
        _copy_bounded(hr, copy, MAX_SQLITE)
        try:
            got = check_sqlite_file(copy, str(mem.get("table") or "baileys_auth"))
        except AgentError as e:
            return [str(e)]
    return [] if got["rows"] == mem.get("rows") else [f"sqlite: {got['rows']} rows, manifest says {mem.get('rows')}"]


def restore_sqlite(cfg: BotConfig, fpath: str, mem: dict[str, Any]) -> int:
    """Check root's copy once more, then a child as the bot writes it beside the live database and
    renames it over (one atomic step; the bot is stopped by the playbook)."""
    assert cfg.sqlite is not None
    with root_tempdir() as td:
        copy = os.path.join(td, "restore.sqlite")
        with open_plain(cfg, fpath, bool(mem.get("encrypted"))) as src:
            hr = HashReader(src)
            _copy_bounded(hr, copy, MAX_SQLITE)
        if hr.h.hexdigest() != mem.get("plain_sha256"):
            raise AgentError(f"{cfg.name}: sqlite member changed since verify; nothing restored")
        got = check_sqlite_file(copy, cfg.sqlite["table"])
        child = BotChild(cfg, _child_sqlite_put, cfg.sqlite["path"], stream="in")
        try:
            assert child.stream is not None
            with open(copy, "rb") as f:
                shutil.copyfileobj(f, child.stream)
        except BaseException as e:
            child.kill()
            with contextlib.suppress(AgentError):
                child.finish()
            if isinstance(e, OSError):
                raise AgentError(f"{cfg.name}: sqlite restore failed, database unchanged: {e}") from None
            raise
        child.finish()
    return int(got["rows"])


def _child_sqlite_put(inp: BinaryIO, path: str) -> None:
    """(as the bot) Write the database on `inp` as `.<name>.restore-*` beside `path`, then rename it over
    `path`. The old file's -wal/-shm go first: SQLite would replay a stale WAL onto the new file."""
    parent, base = os.path.split(path)
    os.makedirs(parent, 0o700, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.restore-{os.getpid()}-{secrets.token_hex(3)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as w:
            shutil.copyfileobj(inp, w)
            w.flush()
            os.fsync(w.fileno())
        for side in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + side)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


def _child_sqlite_open(path: str) -> Any:
    """(as the bot) The live database, read-write, never created."""
    import sqlite3

    return sqlite3.connect(_sqlite_uri(path, "rw"), uri=True, timeout=30, isolation_level=None)


def _child_sqlite_facts(_: None, path: str, table: str) -> dict[str, Any]:
    """(as the bot) Rows by type and the creds summary of the live database."""
    import sqlite3

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"reachable": True, "exists": False, "error": None, "rows": 0, "by_type": {},
                "creds": {"present": False, "parses": False, "linked": False, "me_id": None}}
    try:
        conn = sqlite3.connect(_sqlite_uri(path, "ro"), uri=True, timeout=5)
        try:
            s = sqlite_summary(conn, table)
        finally:
            conn.close()
    except (sqlite3.Error, AgentError) as e:
        return {"reachable": False, "exists": True, "error": f"sqlite: {e}"[:300]}
    s.pop("creds_doc")
    s["creds"]["mtime"] = iso(datetime.fromtimestamp(st.st_mtime, UTC))
    return {"reachable": True, "exists": True, "error": None, "size": st.st_size, **s}


def sqlite_facts(cfg: BotConfig) -> dict[str, Any]:
    assert cfg.sqlite is not None
    return {"path": cfg.sqlite["path"], "table": cfg.sqlite["table"],
            **as_bot(cfg, _child_sqlite_facts, cfg.sqlite["path"], cfg.sqlite["table"])}


def _child_sqlite_clear(_: None, path: str, table: str) -> int:
    """(as the bot) Delete every row of this bot's database (the file and its schema stay)."""
    if not os.path.exists(path):
        return 0
    conn = _child_sqlite_open(path)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
            return 0
        return int(conn.execute(f'DELETE FROM "{table}"').rowcount)
    finally:
        conn.close()


def _child_sqlite_prune(_: None, path: str, table: str, mode: str, prekeys_keep: int,
                        dry_run: bool) -> dict[str, int]:
    """(as the bot) prune-keys on the database: broken (or all) sessions, the oldest pre-keys beyond
    `prekeys_keep`. Sender keys carry no timestamp in this store, so none is judged stale."""
    counts = {"session": 0, "pre-key": 0, "sender-key": 0}
    if not os.path.exists(path):
        return counts
    conn = _child_sqlite_open(path)
    try:
        drop: list[str] = []
        prekeys: list[tuple[int, str]] = []
        for k, v in list(_sqlite_rows(conn, table)):
            t = key_type(k)
            if t == "session":
                try:
                    broken = not json.loads(v)
                except ValueError:
                    broken = True
                if mode == "all" or broken:
                    drop.append(k)
                    counts["session"] += 1
            elif t == "pre-key" and k[8:].isdigit():
                prekeys.append((int(k[8:]), k))
        prekeys.sort()
        old = [k for _, k in prekeys[: max(0, len(prekeys) - prekeys_keep)]]
        counts["pre-key"] = len(old)
        drop += old
        if not dry_run and drop:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f'DELETE FROM "{table}" WHERE key = ?', [(k,) for k in drop])
            conn.execute("COMMIT")
    finally:
        conn.close()
    return counts
