"""The bounded window read of a log: the last N bytes of a file or stream, from a line start. The one
copy: the agent's log shipping (`logtail`, as the bot user through `privdrop`) and the controller's record
reader (`waops.logparse`) both use it. The cost is bounded by the window, never by the file's size."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


def tail_of(f: BinaryIO, window: int) -> tuple[bytes, int]:
    """(last `window` bytes, offset of the first of them) of an open file: a regular file is read from its
    end (seek), so its size does not matter, and one truncated or rotated under us just yields fewer bytes;
    anything else (a pipe, a FIFO) is read through, keeping only the end."""
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        return stream_tail(f, window)
    start = max(0, st.st_size - window)
    f.seek(start)
    return f.read(window), start


def stream_tail(f: BinaryIO, window: int) -> tuple[bytes, int]:
    """(last `window` bytes, offset of the first of them) of a stream, in bounded memory."""
    buf = bytearray()
    total = 0
    while chunk := f.read(65_536):
        buf += chunk
        total += len(chunk)
        if len(buf) > 2 * window:
            del buf[: len(buf) - window]
    data = bytes(buf[-window:])
    return data, total - len(data)


def from_line_start(data: bytes, start: int, keep_long: int = 0, nul_ends_line: bool = True) -> bytes:
    """A window that starts mid-file (start > 0) without its partial first line; a NUL (the hole a
    copy-truncate leaves) ends a line too unless the caller turned holes into newlines itself (single
    NULs are then UTF-16 text). With no line end at all: the last `keep_long` bytes."""
    if start <= 0:
        return data
    ends = (data.find(b"\n"), data.find(b"\0") if nul_ends_line else -1)
    cut = min((i for i in ends if i >= 0), default=-1)
    if cut >= 0:
        return data[cut + 1:]
    return data[-keep_long:] if keep_long > 0 else b""
