"""Opening files a person names (config, saved logs) without hanging on a FIFO nobody writes to.

A plain open() of a FIFO blocks until a writer appears, forever when none does. Here the open is
non-blocking; a FIFO then gets a bounded wait for its first data (or its writer's end), after which
it is read like any pipe.
"""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path
from typing import BinaryIO

from waops.errors import UsageError

FIFO_WAIT_S = 5.0  # a writer such as `journalctl ... > fifo` starts within this


def open_read(path: str | os.PathLike[str], what: str, *, fifo_ok: bool = True,
              fifo_wait_s: float = FIFO_WAIT_S) -> BinaryIO:
    """`path` opened for reading: a regular file, or (fifo_ok) a pipe that has a writer.
    OSError (missing, unreadable, a directory) is left to the caller, which knows how to word it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if stat.S_ISFIFO(mode):
            if not fifo_ok:
                raise UsageError(f"{what} {path} is a FIFO, not a file")
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP)
            if not poller.poll(int(fifo_wait_s * 1000)):
                raise UsageError(f"{what} {path} is a FIFO with no writer (waited {fifo_wait_s:.0f}s)")
        elif not stat.S_ISREG(mode):
            raise UsageError(f"{what} {path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small(path: Path, what: str, limit: int = 1 << 20) -> bytes:
    """A small regular file (config): never a FIFO, never more than `limit` bytes."""
    with open_read(path, what, fifo_ok=False) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data
