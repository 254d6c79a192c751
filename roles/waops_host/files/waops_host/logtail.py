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
from collections.abc import Iterable, Iterator
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


def journal_entries(window: int) -> tuple[int, int]:
    """(entries, byte budget) of one unit's read: newest entries first (`-r`), up to a byte budget, so
    the cost is bounded by the window even when single messages are huge."""
    return max(200, window // 256), 4 * window  # JSON framing roughly doubles a message: room for it


def _journalctl(args: list[str], budget: int) -> tuple[list[bytes], bool, int] | None:
    """(JSON lines newest first, whether the read stopped short (budget or deadline), exit status)."""
    jc = shutil.which("journalctl")
    if not jc:
        return None
    p = subprocess.Popen([jc, *args, "-r", "-o", "json", "--no-pager"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    raw = b""
    deadline = time.monotonic() + 10
    short = False
    try:
        while len(raw) < budget:
            if time.monotonic() >= deadline:
                short = True
                break
            chunk = p.stdout.read1(budget - len(raw))  # type: ignore[attr-defined]
            if not chunk:
                break
            raw += chunk
    finally:
        p.kill()
        p.wait()
    lines = raw.split(b"\n")
    if len(raw) >= budget:
        lines, short = lines[:-1], True  # the last one was cut by the budget
    return lines, short, p.returncode


def logs_from_journald(unit: str, window: int, read: tuple[list[bytes], int] | None = None) -> dict[str, Any]:
    """`read`: this unit's lines and journalctl's status from `journal_reads` (one run for the host's units)."""
    n, budget = journal_entries(window)
    res: dict[str, Any] = {"source": "journald", "window_bytes": window, "entries": n}
    if read is None:
        got = _journalctl(["-u", unit, "-n", str(n), "--output-fields=MESSAGE,PRIORITY,__REALTIME_TIMESTAMP"],
                          budget)
        if got is None:
            return {**res, **ship_lines([]), "error": "journalctl not found"}
        read = got[0], got[2]
    lines, status = read
    res.update(ship_lines(journal_items(reversed(lines))))
    if status not in (0, -signal.SIGKILL) and not res["lines_read"]:
        res["error"] = f"journalctl exit {status}"
    return res


COREDUMP_MESSAGE_ID = "fc2e22bc6ee647b6b90729ab34a250b1"
UNIT_FIELDS = ("_SYSTEMD_UNIT", "UNIT", "OBJECT_SYSTEMD_UNIT", "COREDUMP_UNIT", "_PID", "_UID", "MESSAGE_ID")


def units_of(e: dict[str, Any]) -> set[str]:
    """The units whose `journalctl -u UNIT` shows this entry, by journalctl's own matches for a service:
    its processes, PID 1 about it, root's messages about it, its core dumps."""
    def values(field: str) -> set[str]:  # a field journald holds several times comes as a list
        v = e.get(field)
        return {x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)}

    root = "0" in values("_UID")
    found = values("_SYSTEMD_UNIT")
    if "1" in values("_PID"):
        found |= values("UNIT")
    if root:
        found |= values("OBJECT_SYSTEMD_UNIT")
        if COREDUMP_MESSAGE_ID in values("MESSAGE_ID"):
            found |= values("COREDUMP_UNIT")
    return found


def journal_reads(units: list[str], window: int) -> dict[str, tuple[list[bytes], int]]:
    """The journal reads of several bots in ONE journalctl run (the newest entries of all their units, split
    by unit; bots that name the same unit share its read). A unit's lines are exactly those of its own
    `logs_from_journald` run whenever that can be told: it got its `n` newest entries, or the run saw
    every entry there is and the unit's lines stay far within its byte budget. A unit this cannot vouch
    for is missing from the result and reads on its own."""
    wanted = [u for u in units if u.endswith(".service") and not any(c in u for c in "*?[\\")]
    units = list(dict.fromkeys(wanted))
    if len(wanted) < 2:  # one read for one bot: its own run is the same run
        return {}
    n, budget = journal_entries(window)
    args = [a for u in units for a in ("-u", u)]
    got = _journalctl([*args, "-n", str(n * len(units)),
                       "--output-fields=" + ",".join(("MESSAGE", "PRIORITY", "__REALTIME_TIMESTAMP", *UNIT_FIELDS))],
                      budget * len(units))
    if got is None or got[2] not in (0, -signal.SIGKILL):
        return {}
    lines, short, status = got
    mine: dict[str, list[bytes]] = {u: [] for u in units}
    seen = 0
    for raw, e in json_objects(lines):
        seen += 1
        for u in units_of(e) & mine.keys():
            mine[u].append(raw)
    complete = not short and seen < n * len(units)
    out: dict[str, tuple[list[bytes], int]] = {}
    for u, got_u in mine.items():
        kept = got_u[:n]
        if (len(got_u) >= n or complete) and sum(len(x) + 1 for x in kept) < budget // 2:
            out[u] = kept, status
    return out


def json_objects(lines: Iterable[bytes]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """`journalctl -o json` output: each line with its entry; a line that is no JSON object is skipped."""
    for raw in lines:
        try:
            e = json.loads(raw)
        except ValueError:
            continue
        if isinstance(e, dict):
            yield raw, e


def journal_items(entries: Iterable[bytes]) -> list[tuple[str, str]]:
    """`journalctl -o json` lines (oldest first) -> (stream, line) with journald's time on each line."""
    items: list[tuple[str, str]] = []
    for _, e in json_objects(entries):
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
