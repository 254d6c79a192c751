"""Exit codes, limits and small helpers every part of the agent uses (time, bounded JSON files, fsync)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import sys
from datetime import UTC, datetime
from typing import Any, BinaryIO

AGENT_VERSION = "1"
FORMAT_VERSION = 1
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 75
DEFAULT_CONFIG_DIR = "/etc/waops/bots"
DEFAULT_LOCK_DIR = "/run/waops"  # root-owned, no group/other write (the keep-alive sockets need it 0711)
DEFAULT_STATE_DIR = "/var/lib/waops/agent"  # check state: root 0700, survives reboots
DEFAULT_METRICS_FILE = "/var/lib/node_exporter/textfile_collector/waops.prom"
REASONS = ("cron", "keepalive", "manual", "post-repair", "pre-reset", "pre-restore", "pre-prune", "pre-migrate")
BOT_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
# Key types of Baileys' auth store, longest first so `sender-key-memory` wins over `sender-key`.
KEY_TYPES = (
    "app-state-sync-version", "app-state-sync-key", "sender-key-memory", "identity-key",
    "device-list", "lid-mapping", "sender-key", "pre-key", "session", "tctoken",
)
AUTH_TAR, DB_DUMP, MANIFEST, VERIFY_MARK = "auth.tar", "db.jsonl", "manifest.json", "verify.json"
SQLITE_DB = "auth.sqlite"  # sqlite store: an online-backup copy of the bot's database file
AUTH_STORES = ("files", "postgres", "sqlite")
MAX_SMALL_JSON = 1 << 20  # creds.json, health file, manifest: anything bigger is not what we expect
MAX_MEMBER = 256 << 20
MAX_MANIFEST = 32 << 20  # lists every auth file (~90 bytes each); parsing costs ~20x its size in memory
MAX_ENTRIES = 200_000  # auth files in one backup: keeps the manifest under MAX_MANIFEST
MAX_CHILD_REPLY = 64 << 20  # what a bot-user child may send back (log tails, facts): bounded
SUMMARY_KEYS = ("id", "bot", "reason", "created_at", "creds_linked", "device", "encrypted", "library",
                "auth_store", "release")
MAX_TEXT = 1000  # one shipped log line is cut at 4x this


class AgentError(Exception):
    """A domain error carrying its exit code; the top level prints one line and exits with it."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(AgentError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)




def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt else None


def parse_iso(value: Any, *, naive: str) -> datetime | None:
    """An ISO 8601 time (`Z` allowed), or None. A time without an offset is read in `naive`: "local"
    for times a process on this host wrote in its own zone (pm2 `time: true`), "utc" for times the
    agent and the keep-alive agent write (always UTC; the host's zone must not shift them)."""
    if naive not in ("local", "utc"):
        raise ValueError(f"naive must be 'local' or 'utc', not {naive!r}")
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo:
        return dt
    return dt.astimezone() if naive == "local" else dt.replace(tzinfo=UTC)


def sha256_file(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def open_regular(path: str, follow: bool = False) -> BinaryIO:
    """Open a file for reading only if it is a regular file (and, unless `follow`, not a link). A FIFO (or
    a link to one, or to a tty) would block an open/read forever."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)  # O_NONBLOCK: a FIFO does not wait
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small_json(path: str, limit: int = MAX_SMALL_JSON, follow: bool = False) -> Any:
    """Parse a JSON file we expect to be small; bounded so a huge or hostile file costs nothing."""
    with open_regular(path, follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    return json.loads(data)


def write_json_file(path: str, doc: Any) -> None:
    """tmp + fsync + rename. The tmp name is new (O_EXCL, never through a link) and is removed when the
    write fails (a full disk), so no leftover can spoil the directory."""
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, separators=(",", ":"))  # no indent: keeps the C encoder (10k+ entries)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def log(msg: str) -> None:
    print(f"waops-host: {msg}", file=sys.stderr)
