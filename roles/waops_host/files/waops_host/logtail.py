"""The bounded log read (a window from the end of a file) and the lines shipped in the facts.
The window itself is read by `window` (shared with the controller's record reader)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .base import MAX_TEXT, AgentError, iso, open_regular
from .privdrop import read_as_bot
from .window import from_line_start, tail_of

if TYPE_CHECKING:
    from .config import BotConfig


# The agent does not read log lines: it ships the newest raw lines of each stream, bounded, and the
# controller's one record reader and rule table (waops.logparse, waops.rules) make sense of them.
LOG_SHIP_BYTES = 65536  # per stream: the newest lines up to this many bytes travel in the facts


def read_tail(path: str, window: int, cfg: BotConfig | None = None) -> tuple[list[str], int, float | None]:
    """Last `window` bytes of a file as lines, and the file's mtime (when its newest line was written).
    Cost is bounded by window, not by the file size; a file truncated or rotated under us just yields
    fewer bytes. With `cfg`, read as the bot user (its logs, and pm2's log paths come from the bot
    user's daemon)."""
    if cfg is not None:
        got = read_as_bot(cfg, path, window, tail=True)
        if got is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        data, start, mtime = got[0][:window], got[1]["start"], got[1].get("mtime")
    else:
        with open_regular(path, follow=True) as f:
            data, start = tail_of(f, window)
            mtime = os.fstat(f.fileno()).st_mtime
    data = from_line_start(data, start)
    text = data.decode("utf-8", "replace").replace("\x00", "\n")
    lines = [ln[:MAX_TEXT * 4] for ln in text.splitlines()]  # blank lines end records (caret blocks)
    return lines, len(data), mtime if isinstance(mtime, (int, float)) else None


def ship_lines(items: list[tuple[str, str]]) -> dict[str, Any]:
    """items: (stream, line) in file order per stream -> the newest lines of each stream, at most
    LOG_SHIP_BYTES each, in order. Nothing is interpreted here."""
    streams: dict[str, list[str]] = {}
    for stream, line in items:
        streams.setdefault(stream, []).append(line)
    shipped: dict[str, list[str]] = {}
    for stream, lines in streams.items():
        keep: list[str] = []
        size = 0
        for line in reversed(lines):
            size += len(line.encode("utf-8", "replace")) + 1
            if size > LOG_SHIP_BYTES and keep:
                break
            keep.append(line)
        shipped[stream] = keep[::-1]
    return {"lines_read": len(items), "ship_bytes": LOG_SHIP_BYTES, "streams": shipped}


def logs_from_files(files: dict[str, str], window: int, source: str, cfg: BotConfig | None = None) -> dict[str, Any]:
    items: list[tuple[str, str]] = []
    errors = {}
    mtimes: dict[str, str] = {}
    total = 0
    for stream in ("out", "err"):
        path = files.get(stream)
        if not path:
            continue
        try:
            lines, n, mtime = read_tail(path, window, cfg)
        except (OSError, AgentError) as e:
            errors[stream] = str(e) if isinstance(e, AgentError) else f"{path}: {e.strerror or e}"
            continue
        total += n
        items.extend((stream, ln) for ln in lines)
        if mtime is not None:
            # pm2's default logs carry no time: the file's mtime dates the newest line of the stream.
            mtimes[stream] = iso(datetime.fromtimestamp(mtime, UTC)) or ""
    res = {"source": source, "window_bytes": window, "bytes_read": total, **ship_lines(items),
           "files": files, "mtimes": mtimes}
    if errors:
        res["errors"] = errors
    return res


def logs_from_journald(unit: str, window: int) -> dict[str, Any]:
    """Newest entries first (`-r`), read up to a byte budget, so the cost is bounded by the window
    even when single messages are huge."""
    n = max(200, window // 256)
    budget = 4 * window  # JSON framing roughly doubles a message; leave room for it
    res: dict[str, Any] = {"source": "journald", "window_bytes": window, "entries": n}
    jc = shutil.which("journalctl")
    if not jc:
        return {**res, **ship_lines([]), "error": "journalctl not found"}
    p = subprocess.Popen([jc, "-u", unit, "-n", str(n), "-r", "-o", "json", "--no-pager",
                          "--output-fields=MESSAGE,PRIORITY,__REALTIME_TIMESTAMP"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    raw = b""
    deadline = time.monotonic() + 10
    try:
        while len(raw) < budget and time.monotonic() < deadline:
            chunk = p.stdout.read1(budget - len(raw))  # type: ignore[attr-defined]
            if not chunk:
                break
            raw += chunk
    finally:
        p.kill()
        p.wait()
    lines = raw.split(b"\n")
    if len(raw) >= budget:
        lines = lines[:-1]  # the last one was cut by the budget
    res.update(ship_lines(journal_items(reversed(lines))))
    if p.returncode not in (0, -signal.SIGKILL) and not res["lines_read"]:
        res["error"] = f"journalctl exit {p.returncode}"
    return res


def journal_items(entries: Iterable[bytes]) -> list[tuple[str, str]]:
    """`journalctl -o json` lines (oldest first) -> (stream, line) with journald's time on each line."""
    items: list[tuple[str, str]] = []
    for raw in entries:
        try:
            e = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(e, dict):
            continue
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # journald gives non-UTF-8 messages as byte arrays
            msg = bytes(x & 0xFF for x in msg if isinstance(x, int)).decode("utf-8", "replace")
        if not isinstance(msg, str):
            continue
        stamp = ""
        with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
            stamp = iso(datetime.fromtimestamp(int(e.get("__REALTIME_TIMESTAMP")) / 1e6, UTC)) or ""
        stream = "err" if str(e.get("PRIORITY", "6")) in ("0", "1", "2", "3") else "out"
        for line in msg.replace("\x00", "\n").splitlines():
            # journald's own time prefixes the line the way pm2's `time: true` does
            if line.strip():
                items.append((stream, _inject_time(line[: MAX_TEXT * 4], stamp) if stamp else line[: MAX_TEXT * 4]))
    return items


def _inject_time(line: str, stamp: str) -> str:
    # A pino line keeps its own `time`; prefix only when it has none.
    return line if '"time"' in line else f"{stamp}: {line}"
