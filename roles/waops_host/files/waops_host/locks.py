"""Root-owned directories, the per-bot flock, the repair lease and the record of scheduled backups."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .base import EXIT_LOCKED, EXIT_USAGE, AgentError, iso, now_utc, parse_iso, read_small_json, write_json_file
from .privdrop import bot_ids

if TYPE_CHECKING:
    from .config import BotConfig


# The rules (docs/THREAT-MODEL.md): locks, check state and backups live in directories only root can
# write; everything below the bot user's own directories is touched by a child that runs as that user.


def _trusted(st: os.stat_result) -> bool:
    """A directory nobody but us (or root) can change: owned by us or root, no group/other write unless
    sticky (/tmp: others cannot rename or remove what is ours there)."""
    return (stat.S_ISDIR(st.st_mode) and st.st_uid in (0, os.geteuid())
            and (not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX)))


def check_ancestors(path: str) -> None:
    """Every directory above `path` must be trusted, or a rename there could swap what we open below."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.lstat(parent)
        if not _trusted(st):
            raise AgentError(f"{parent}: writable by another user or a link; refusing to use {path} below it",
                             EXIT_USAGE)
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def ensure_root_dir(path: str, mode: int = 0o700) -> None:
    """Create `path` (parents 0755) or check it: a real directory of ours that no other user can write,
    under trusted directories. Anything else is refused (exit 2), never used."""
    path = os.path.abspath(path)
    made = False
    try:
        os.mkdir(path, mode)
        made = True
    except FileExistsError:
        pass
    except FileNotFoundError:
        old = os.umask(0o022)  # parents traversable (/var/backups/waops), whatever our own umask
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        finally:
            os.umask(old)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
            made = True
    if made:
        os.chmod(path, mode, follow_symlinks=False)  # 0711 for /run/waops: our umask is 077
    check_ancestors(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise AgentError(f"{path}: not a directory owned by uid {os.geteuid()} without group/other write; "
                         "refusing to use it", EXIT_USAGE)


def flock_wait(fd: int, wait_s: float, interval_s: float = 0.05) -> bool:
    """Take an exclusive flock on `fd`, trying again every interval_s for up to wait_s; False when it stays
    held. Polled, not blocking: a blocking flock cannot time out without a signal. (The controller's
    per-bot lock uses this loop too.)"""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)


@contextlib.contextmanager
def file_lock(path: str, wait_s: float, busy: str) -> Iterator[None]:
    """Exclusive flock on `path`, waiting up to wait_s; AgentError(busy, EXIT_LOCKED) when it stays held.
    The lock directory is root's alone, so no other user can create, hold or link the lock file."""
    ensure_root_dir(os.path.dirname(path), 0o711)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError(f"{path}: not a regular file", EXIT_USAGE)
        if not flock_wait(fd, wait_s):
            raise AgentError(busy, EXIT_LOCKED)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def bot_lock(cfg: BotConfig, lock_dir: str, wait_s: float) -> contextlib.AbstractContextManager[None]:
    """Exclusive flock per bot, so backup/restore/reset/prune never interleave (cron vs playbook)."""
    path = os.path.join(lock_dir, f"waops-{cfg.name}.lock")
    return file_lock(path, wait_s, f"{cfg.name}: lock {path} is busy (another run holds it)")


def backup_root(cfg: BotConfig) -> str:
    """The bot's backup directory, root's alone (0700). One left by an older agent, owned by the bot
    user, is taken over first: the directory by its fd, then every entry opened without following links;
    links, specials and hard-linked files are removed, never chowned."""
    path = cfg.backup_dir
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        ids = bot_ids(cfg)
        if stat.S_ISDIR(st.st_mode) and ids and st.st_uid == ids[0]:  # only the bot user's: others are refused
            check_ancestors(path)
            _take_over(path, 0o700)
    ensure_root_dir(path, 0o700)
    return path


#
# One lease per bot on its host, held by whoever repairs it (a controller, a playbook) from the stop to
# the verify, QR wait included. Backups, destructive commands and the check see it; a holder that dies
# stops renewing and the lease expires. The flock only guards the read-modify-write of the state file.

REPAIR_TTL_S = 300
OWNER_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,128}$")


def lease_path(cfg: BotConfig, lock_dir: str) -> str:
    return os.path.join(lock_dir, f"{cfg.name}.repair.json")


def read_lease(cfg: BotConfig, lock_dir: str) -> dict[str, Any] | None:
    """The bot's unexpired repair lease, or None."""
    try:
        doc = read_small_json(lease_path(cfg, lock_dir))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("owner"), str):
        return None
    expires = parse_iso(doc.get("expires_at"), naive="local")
    return doc if expires is not None and expires > now_utc() else None


def lease_holder(lease: dict[str, Any]) -> str:
    return f"another repair is running on {lease.get('host')} (owner {lease.get('owner')} since {lease.get('since')})"


def check_lease(cfg: BotConfig, lock_dir: str, owner: str | None) -> None:
    """Refuse (exit 75) when someone else holds the bot's repair lease."""
    lease = read_lease(cfg, lock_dir)
    if lease is not None and lease["owner"] != owner:
        raise AgentError(f"{cfg.name}: {lease_holder(lease)}", EXIT_LOCKED)


def do_repair(cfg: BotConfig, action: str, owner: str, ttl: float, lock_dir: str, wait_s: float) -> dict[str, Any]:
    if not OWNER_RE.match(owner):
        raise AgentError(f"bad --owner {owner!r}: 1-128 of [A-Za-z0-9_.:@+-]", EXIT_USAGE)
    if not 1 <= ttl <= 86400:
        raise AgentError("--ttl must be between 1 and 86400 seconds", EXIT_USAGE)
    ensure_root_dir(lock_dir, 0o711)
    path = lease_path(cfg, lock_dir)
    with file_lock(os.path.join(lock_dir, f"waops-{cfg.name}.repair.lock"), wait_s,
                   f"{cfg.name}: the repair lease is being changed by another run"):
        cur = read_lease(cfg, lock_dir)
        if cur is not None and cur["owner"] != owner:
            raise AgentError(f"{cfg.name}: {lease_holder(cur)}", EXIT_LOCKED)
        if action == "end":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return {"bot": cfg.name, "ok": True, "action": action, "owner": owner, "held": False}
        now = now_utc()
        doc = {"bot": cfg.name, "owner": owner, "host": socket.gethostname(),
               "since": cur["since"] if cur else iso(now), "renewed_at": iso(now),
               "expires_at": iso(now + timedelta(seconds=ttl))}
        write_json_file(path, doc)
        return {"bot": cfg.name, "ok": True, "action": action, "held": True, "retaken": action == "renew" and not cur,
                **doc}


SCHEDULED_REASONS = ("cron", "keepalive")


def backup_run_path(cfg: BotConfig, lock_dir: str) -> str:
    return os.path.join(lock_dir, f"{cfg.name}.backup-run.json")


def record_backup_run(cfg: BotConfig, lock_dir: str, reason: str, bid: str | None, error: str | None) -> None:
    """The last scheduled backup's result, for the check: a failed one alerts at once, not when the newest
    backup has grown old. Kept beside the locks (root-owned, until reboot)."""
    if reason not in SCHEDULED_REASONS:
        return
    doc = {"bot": cfg.name, "at": iso(now_utc()), "reason": reason, "ok": error is None, "id": bid,
           "error": error[:500] if error else None}
    with contextlib.suppress(OSError):  # the backup's own result is what the caller reports
        write_json_file(backup_run_path(cfg, lock_dir), doc)


def read_backup_run(cfg: BotConfig, lock_dir: str) -> dict[str, Any] | None:
    try:
        doc = read_small_json(backup_run_path(cfg, lock_dir))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("ok"), bool) else None


def _take_over(path: str, mode: int, dir_fd: int | None = None, depth: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # first: once root's 0700, the bot can change nothing below any more
        os.fchown(fd, 0, 0)
        for name in os.listdir(fd):
            st = os.lstat(name, dir_fd=fd)
            if stat.S_ISDIR(st.st_mode) and depth == 0:  # a backup set
                _take_over(name, 0o700, fd, 1)
            elif stat.S_ISDIR(st.st_mode):  # nothing in a backup set is a directory
                shutil.rmtree(name, dir_fd=fd)
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                try:
                    if stat.S_ISREG(os.fstat(f).st_mode):
                        os.fchmod(f, 0o600)
                        os.fchown(f, 0, 0)
                finally:
                    os.close(f)
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
