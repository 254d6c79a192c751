"""Controller-side per-bot lock: two `waops recover` runs on one controller never work on the same bot.

An flock on a file in the user's state dir; the kernel drops it when the process dies, so a crashed run
never leaves a stale lock. The host-side lock (/run/waops/waops-<bot>.lock) is the agent's business.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from types import TracebackType

from waops.errors import ExitCode, WaopsError
from waops_host.locks import flock_wait

EXIT_LOCK_BUSY = ExitCode.BUSY
_BOT_NAME = re.compile(r"^[a-z0-9_-]+$")


class LockBusyError(WaopsError):
    exit_code = EXIT_LOCK_BUSY


def state_dir() -> Path:
    """The controller's state dir: $XDG_STATE_HOME/waops, or ~/.local/state/waops."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "waops"


class BotLock:
    """`with BotLock("lab-1", "shop"):` holds the lock; raises LockBusyError after `wait_s` seconds."""

    def __init__(self, host: str, bot: str, *, directory: Path | None = None, wait_s: float = 0.0) -> None:
        if not _BOT_NAME.match(bot):
            raise WaopsError(f"invalid bot name {bot!r}")
        # Host names go into a file name: keep only safe characters.
        safe_host = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        self.path = (directory or state_dir() / "locks") / f"{safe_host}--{bot}.lock"
        self.wait_s = wait_s
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not flock_wait(fd, self.wait_s, 0.1):
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (held by pid {holder})" if holder else ""
            raise LockBusyError(f"another waops run is working on this bot{who}: {self.path}")
        # The pid is for the message above only; the flock is the lock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> BotLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
