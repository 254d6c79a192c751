"""Turn any pasted bot log into records: pm2 (with or without `time: true` and `pm2 logs` prefixes),
journald (`journalctl -o json` and short text), pino JSON, pino-pretty and plain console lines, mixed.

Robust by construction: bytes are decoded with replacement, control characters dropped, long lines
truncated, and a file is read only as a window from its end (seek), so the cost does not grow with the
size of the log. Nothing here decides a cause; `waops.rules` does.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import sleep
from typing import Any

from waops import prefilter
from waops.errors import UsageError
from waops_host.window import from_line_start, stream_tail, tail_of

DEFAULT_WINDOW = 262_144  # bytes read from the end of a file (CONTRACTS: log_window_bytes)
MAX_LINE = 8_192  # a line longer than this is truncated (a 10 MB minified dump is not evidence)
MAX_RECORD_TEXT = 16_384  # characters of one assembled record that rules search
TEXT_FRAMES = 2  # stack frames of a record that rules match (the rest stay in raw)
MAX_DETAIL_LINES = 80  # continuation lines (object dump, stack, caret block) folded into one record
ROTATION_PATIENCE = (0.02, 0.05, 0.1, 0.2, 0.4)  # s between looks at a log path missing mid-rotation

LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}

_HOLE = re.compile(rb"\x00{4,}")  # a copy-truncate hole (a NUL run); single NULs are UTF-16 text
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PM2_PREFIX = re.compile(r"^\d+\|[\w@./-]+\s*\|\s?")  # `pm2 logs`: "0|shop  | "
_JOURNAL_SHORT = re.compile(
    r"^(?P<time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d{4}|Z)?)"
    r" (?P<host>[\w.-]+) (?P<unit>[\w@./-]+)(?:\[\d+\])?: ?(?P<msg>.*)$"
)
_PRETTY = re.compile(
    r"^(?:\[(?P<time>[\d:.\- TZ+]+)\]\s+)?(?P<level>TRACE|DEBUG|INFO|WARN|ERROR|FATAL|USERLVL)"
    r"(?:\s*\([^)]*\))?: ?(?P<msg>.*)$"
)
_PRETTY_LEVEL_FIRST = re.compile(  # pino-pretty's levelFirst: `ERROR [2022-08-03 13:48:18.768 +0700]: msg`
    r"^(?P<level>TRACE|DEBUG|INFO|WARN|ERROR|FATAL)\s+\[(?P<time>[^\]]{5,40})\](?:\s*\([^)]*\))?:\s?(?P<msg>.*)$"
)
# after a time: `host unit[pid]: ` (syslog, journald) or `app[web.1]: ` (Heroku's dyno prefix)
_SYSLOG_TAIL = re.compile(r"^(?:(?P<host>[\w.-]+) )?(?P<unit>[\w@./-]+)\[[\w.-]+\]: ?(?P<msg>.*)$")
_FRAME = re.compile(r"^\s*at\s")
_STATUS = re.compile(
    r"""["']?(?:status(?:Code|Reason)|disconnectionReasonCode|closeReason|reasonCode)["']?\s*[:=]\s*["']?([1-5]\d\d)\b"""
)
_CODE = re.compile(r"""["']?code["']?\s*[:=]\s*["']?([1-5]\d\d)\b""")
# the server's failure node: `<failure reason="405" location="frc"/>`, and the same node as Baileys dumps
# it (`"reason": "405", "location": "cln"`): the reason is the code even when the dump is cut before it
_REASON = re.compile(r"""(?:failure reason|reason)\s*=\s*\\?["']([1-5]\d\d)|"""
                     r"""\breason["']?\s*:\s*["']([1-5]\d\d)["']\s*,\s*["']?location\b""")
# the legacy WAConnection and Boom's own rendering: `Unauthorized(401)`, `Unexpected status ... 401`
_NAMED = re.compile(
    r"\b(?:Unauthorized|Forbidden|Gone|Conflict|Not Acceptable|Method Not Allowed|Payment Required|"
    r"Too Many Requests|Request Time-?out|Precondition Required|Internal Server Error|Service Unavailable|"
    r"Restart Required|Connection (?:Closed|Lost|Replaced|Failure)|Timed Out|Logged ?Out|Bad Session)"
    r"\s?\(([1-5]\d\d)\)|Unexpected status\D{0,40}([1-5]\d\d)\b"
)
# what bots print for people: `Status: 405, Reason: Connection Failure`, `(reason: 408)`
# (a lowercase `status: 500,` with a comma is a key of a dumped object, an HTTP API's error body: not one)
# and in prose, `a status code of 440`; never an HTTP client's `Request failed with status code 404`
# and `(status 440)`, `status=408 Request Time-out` (the code, then Boom's name for it)
_HUMAN = re.compile(r"\b(?:Status|[Rr]eason)(?: ?[Cc]ode)?:\s*([1-5]\d\d)\b|"
                    r"\bstatus(?: ?[Cc]ode)?:\s*([1-5]\d\d)\b(?!\s*,)|"
                    r"(?<!with )\b[Ss]tatus [Cc]ode (?:of |is )?([1-5]\d\d)\b|"
                    r"\([Ss]tatus[:=]? ?([1-5]\d\d)\)|"
                    r"\bstatus=([1-5]\d\d) (?=Unknown|Unauthorized|Forbidden|Gone|Request Time-?out|"
                    r"Precondition Required|Method Not Allowed|Too Many Requests|Internal Server Error|"
                    r"Service Unavailable|Not Acceptable|Payment Required|Conflict)")
# a bot's own narration of a close with the code near it, in any wording: `Connection closed with code
# 401`, `Socket closed [428]`, `close (reason 408)`, `Conexão fechada. Motivo: 401`; only WhatsApp's codes
# (an HTTP client's `with status code 404` near a close stays no code)
_WA_CODES = r"(401|403|405|406|408|409|411|428|429|440|500|503|515)"
_WA_CODE_TOKEN = r"(?<![\d.:/-])\b" + _WA_CODES + r"\b(?![\d.:/-])"  # a code, not part of a version or time
_CLOSE_NEAR = re.compile(
    r"(?:\bclos(?:e|ed|ing)\b|disconnect(?:ed|ion)?\b|fechad[ao]|desconectad[ao]|cerrad[ao]|"
    r"\bmotivo\b|\braz[oó]n\b|\breas[eo]{1,2}n\b)[^\n\d]{0,40}?(?<!status code )" + _WA_CODE_TOKEN, re.IGNORECASE)
# the code first, then Boom's name for the close: `error 405 connection closed`, `428 Connection Closed`
_CODE_THEN_CLOSE = re.compile(
    _WA_CODE_TOKEN + r"\W{0,3}(?:connection (?:closed|failure|lost|replaced)|timed out|restart required|"
    r"logged ?out|method not allowed)\b", re.IGNORECASE)
# Baileys' DisconnectReason by name (`DisconnectReason.badSession`, `reason: timedOut`): the enum's code;
# a bare common word (`forbidden`) only after a reason word
DISCONNECT_REASON_CODES = {
    "loggedOut": 401, "forbidden": 403, "timedOut": 408, "connectionLost": 408, "multideviceMismatch": 411,
    "connectionClosed": 428, "connectionReplaced": 440, "badSession": 500, "unavailableService": 503,
    "restartRequired": 515,
}
_REASON_NAME = re.compile(
    r"DisconnectReason\s*[.\[]\s*['\"]?(\w+)|"
    r"\b(loggedOut|timedOut|connectionLost|multideviceMismatch|connectionClosed|connectionReplaced|badSession|"
    r"unavailableService|restartRequired)\b|"
    r"\b[Rr]eason\W{1,4}(forbidden)\b")
# bot templates that print `<code>|<connection>`: "Too many reconnect attempts: 428|close"
_PIPE_STATE = re.compile(r"\b([1-5]\d\d)\|(?:close|open|connecting)\b")
# the legacy WAConnection's BaileysError carries a bare `status: 401`
_LEGACY_STATUS = re.compile(r"""["']?status["']?\s*:\s*([1-5]\d\d)\b""")
_CONFLICT = re.compile(r"""(?:conflict|type)\W{0,12}(device_removed|replaced)""", re.IGNORECASE)
_RESTART = re.compile(r"stream errored.{0,40}restart required", re.IGNORECASE)
# (literal a match needs, regex), in the order they are tried; the literals are case-sensitive
_CODE_RES = (
    ("atus", _STATUS), ("eason", _STATUS), ("reason", _REASON), ("code", _CODE), ("(", _NAMED),
    ("Unexpected", _NAMED), ("BaileysError", _LEGACY_STATUS), ("atus", _HUMAN), ("eason", _HUMAN), ("|", _PIPE_STATE),
)


@dataclass
class Record:
    """One log event. `text` is what rules match (message plus flattened detail); `raw` is the line
    as it was (truncated), kept for evidence."""

    text: str
    raw: str
    time: str | None = None  # ISO 8601 when the line says (pm2 time prefix, pino time, journald)
    level: str | None = None
    code: int | None = None  # WhatsApp status code when the line carries one
    conflict_type: str | None = None  # device_removed | replaced (Stream Errored (conflict))
    source: str = "plain"  # pino | pino-pretty | journald | plain
    stream: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    matches: Any = field(default=None, repr=False, compare=False)  # waops.rules' verdict, computed once

    def evidence(self, limit: int = 300) -> str:
        s = self.raw if len(self.raw) <= limit else self.raw[: limit - 1] + "…"
        return f"{self.time} {s}" if self.time and self.time not in s else s


# ------------------------------------------------------------------------------------------ reading
def read_window(path: str | os.PathLike[str], window: int = DEFAULT_WINDOW) -> bytes:
    """The last `window` bytes of a log, starting at a line boundary. Cost is bounded by `window`.

    A regular file is read from its end (seek), so its size does not matter; a file truncated or
    rotated while read (pm2-logrotate copies then truncates) just yields fewer bytes, and the NUL hole
    a copy-truncate leaves ends a line. A pipe or FIFO (`-` is stdin, `<(journalctl ...)` works) is read
    like `cat` reads it, keeping only its last `window` bytes. Anything else (missing, a directory, a
    device, a socket, unreadable) is a UsageError with the reason."""
    if window <= 0:
        raise UsageError(f"the log window must be a positive number of bytes, not {window}")
    p = Path(path)
    if str(path) == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("--log-file -: stdin is a terminal; pipe a log into it")
        data, start = stream_tail(sys.stdin.buffer, window)
    else:
        for pause in (*ROTATION_PATIENCE, None):
            try:
                data, start = _read_path(p, window)
                break
            except FileNotFoundError:
                # rotation by rename leaves the path missing for a moment: look again before giving up
                if pause is None or not _rotated_siblings(p):
                    raise UsageError(f"log file not found: {p}") from None
                sleep(pause)
            except IsADirectoryError:
                raise UsageError(f"log file is a directory: {p}") from None
            except OSError as exc:
                raise UsageError(f"cannot read log file {p}: {exc.strerror or exc}") from None
    # one huge line: keep its end
    return from_line_start(_HOLE.sub(b"\n", data), start, keep_long=MAX_LINE, nul_ends_line=False)


def _rotated_siblings(p: Path) -> bool:
    """Rotated copies beside a missing path (out.log.1, out.log-20261129, out__2026-11-29.log): it is
    probably being rotated right now, so it is worth a second look; a mistyped path fails at once."""
    try:
        return bool(p.stem) and any(q.name.startswith(p.stem) and q.name != p.name for q in p.parent.iterdir())
    except OSError:
        return False


def _read_path(p: Path, window: int) -> tuple[bytes, int]:
    mode = p.stat().st_mode  # before open(): opening some devices blocks or has side effects
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "socket" if stat.S_ISSOCK(mode) else "device"
        raise UsageError(f"log file {p} is a {kind}, not a log (save the log to a file first)")
    from waops.files import open_read

    with open_read(p, "log file") as f:  # a FIFO without a writer is an error, not a hang
        return tail_of(f, window)


def decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def read_log(path: str | os.PathLike[str], window: int = DEFAULT_WINDOW) -> list[Record]:
    return parse_text(decode(read_window(path, window)))


# ------------------------------------------------------------------------------------------ parsing
def parse_text(text: str) -> list[Record]:
    return parse_lines(text.splitlines())


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# Prefixes that wrap a line, stripped in any order and any nesting (docker -t around pm2 around pino).
_EPOCH_COL = re.compile(r"^(1\d{9}(?:\d{3})?(?:\.\d+)?)(?:\s*[|,;]\s?|\s)(?=.)")
_ISO_ANY = re.compile(
    r"^\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?(?:Z|UTC|[+-]\d\d:?\d\d))?)\]?(?::\s|\s(?:\|\s?)?|\t|:?$)"
)
_SYSLOG_TIME = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?\s")  # syslog time, no host
_SLASH_TIME = re.compile(r"^\[?(\d{1,2}/\d{1,2}/\d{2,4},? \d{1,2}:\d\d:\d\d(?: ?[AP]M)?)\]?\s+(?:-\s+)?")
_QUOTE = re.compile(r"^> ?(?=\S|$)|^>\s")  # a log pasted as a markdown quote: `> ` on every line
# node's fatal-exception header, the file:line above the source line and the caret: the next two lines
# (the source line may start at column 0) belong to it
# (a relative `index.js:226` too: a paste often shortens the path)
_CARET_HEAD = re.compile(r"^(?:file://)?(?:/|[A-Za-z]:[\\/]|\.{1,2}/|node:)\S*:\d+\s*$|^[\w@.-]+(?:[/\\][\w@.-]+)*\.[cm]?[jt]sx?:\d+\s*$")
TERMINAL_WIDTHS = (80,)  # a terminal hard-wraps a long line at its width; the cut word goes on next line
_WRAPPED_TAIL = re.compile(r"^[a-z0-9)\]}'\".,:;/_-]")
# ...but a line that opens with a time, an epoch column or a pm2 prefix is a record of its own
# the error node prints under a caret block, after one blank line: `SyntaxError: ...`, `<ref *1> Error: ...`
_THROWN_UNDER_CARET = re.compile(r"^(?:Uncaught |<ref \*\d+> )?[A-Z]?\w*(?:Error|Exception)\b(?: \[\w+\])?:?")
_CARET_LINE = re.compile(r"^\s*\^+\s*$")
_RECORD_START = re.compile(r"^(?:\d{4}-\d\d-\d\d|\d{10,13}\b|\d+\|)")
_CONT = re.compile(r"^(?:\s|at\s|[}\])]|\^+\s*$|\.\.\. \d+ more|Caused by:)")
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`""")
_LEVEL_WORD = re.compile(r"\blevel[\"']?\s*[:=]\s*[\"']?(\w+)", re.IGNORECASE)


def parse_lines(lines: Iterable[str], pasted: bool = True) -> list[Record]:
    """Records from lines in order. A record is assembled before it is returned: the indented object
    dump under a pino-pretty header, a stack trace, a caret block, a JS object printed by console.log,
    JSON split over lines. Lines are first freed of what wraps them (ANSI colours, pm2 `0|app | `,
    journald/syslog, docker/CloudWatch/Loki timestamps, epoch-ms columns); records of interleaved
    processes (pm2 ids, journald units) are assembled separately and kept in the order they began."""
    out: list[Record] = []
    open_by_key: dict[str, _Open] = {}
    last: _Open | None = None
    for line in _clean_lines(lines, pasted):
        body, time, key, wrap = _unwrap(line)
        cur = open_by_key.get(key)
        if (cur is None and last is not None and last.key != key and open_by_key.get(last.key) is last
                and body.strip() and last.takes(body)):
            # a pasted excerpt often lost the prefix of its first line: a continuation with no open
            # record in its own stream continues the newest open record
            key, cur = last.key, last
        if not body.strip():
            if cur is not None and cur.depth <= 0 and not cur.bridge_blank():
                open_by_key.pop(key).close()
            continue
        if cur is not None and cur.takes(body):
            cur.add(body)
            continue
        if cur is not None:
            open_by_key.pop(key).close()
        rec = _parse_body(body, line, time, wrap)
        if rec is None:
            continue
        out.append(rec)
        o = _Open(rec, body, key)
        if o.may_grow():
            open_by_key[key] = last = o
    for o in open_by_key.values():
        o.close()
    return out


class _Open:
    """A record that may still take continuation lines."""

    def __init__(self, rec: Record, first: str, key: str = "") -> None:
        self.rec = rec
        self.key = key
        self.frames = 0
        self.lines = 1
        # a long one-line JSON cut short (truncated, or a fragment) opens no block to wait for
        cut_json = first.lstrip().startswith('{"') and len(first) > 200
        self.depth = _depth(first) if rec.source != "pino" and not cut_json else 0
        self.tail = first.rstrip()
        self.caret = bool(_CARET_HEAD.match(first.strip()))
        self.gap = False  # a blank line seen right after a caret block's caret

    def bridge_blank(self) -> bool:
        """Node prints a fatal exception as file:line, the source line, the caret, a blank line, then the
        error and its stack: one blank line right after the caret does not end that record."""
        if self.caret and not self.gap and _CARET_LINE.match(self.tail):
            self.gap = True
            return True
        return False

    def may_grow(self) -> bool:
        return self.rec.source not in ("pino", "journald-json")

    def takes(self, body: str) -> bool:
        if self.lines >= MAX_DETAIL_LINES:
            return False
        if body.startswith('{"'):
            return False  # a JSON line at column 0 (pino) starts its own record, even in an unclosed dump
        if self.gap and _CARET_LINE.match(self.tail):
            return bool(_THROWN_UNDER_CARET.match(body))  # the error under the caret, after the blank line
        if self.caret and self.lines < 3:
            return True  # the source line and the caret under a fatal exception's file:line
        if self.depth > 0:
            return True
        if self.tail.endswith(("{", "[", "(", ",", ":")) and not _PRETTY.match(body.strip()):
            return True
        return bool(_CONT.match(body))

    def add(self, body: str) -> None:
        self.lines += 1
        self.depth = max(0, self.depth + _depth(body))
        self.tail = body.rstrip()
        detail = body.strip()
        rec = self.rec
        if len(rec.text) >= MAX_RECORD_TEXT:
            pass  # bounded: a huge object dump is evidence in raw, not more text to search
        elif not _FRAME.match(body):
            rec.text += "\n" + detail
        elif self.frames < TEXT_FRAMES:  # the throw site says where (auth state, store); deeper frames
            self.frames += 1             # are evidence only (their paths say tls, socket...)
            rec.text += "\n" + detail
        if len(rec.raw) < MAX_LINE:
            rec.raw += " " + detail

    def close(self) -> None:
        rec = self.rec
        if self.lines > 1:
            _fill_code(rec, rec.text)
            if rec.level is None:
                m = _LEVEL_WORD.search(rec.text)
                rec.level = _level_name(m.group(1)) if m else None


def _depth(s: str) -> int:
    t = _QUOTED.sub("", s)
    return t.count("{") + t.count("[") - t.count("}") - t.count("]")


def _clean_lines(lines: Iterable[str], pasted: bool = True) -> Iterator[str]:
    # only a paste went through a terminal: lines an agent read from a log file were never wrapped
    return _unwrap_terminal(_clean(lines)) if pasted else _clean(lines)


def _unwrap_terminal(lines: Iterable[str]) -> Iterator[str]:
    """Join what a terminal hard-wrapped: a line exactly as long as a terminal is wide, followed by the
    rest of a cut word or path (no indentation, not a record of its own), was one line."""
    held: str | None = None
    for line in lines:
        piece = len(line)  # a wrapped line goes on while each piece fills the width
        if held is not None:
            if line and _WRAPPED_TAIL.match(line) and not line.startswith("at ") and not _RECORD_START.match(line):
                line = held + line
            else:
                yield held
            held = None
        if piece in TERMINAL_WIDTHS:
            held = line
            continue
        yield line
    if held is not None:
        yield held


def _clean(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        if "\x1b" in line:
            line = _ANSI.sub("", line)
        if "\ufffd" in line and _garbage(line):
            yield ""  # binary garbage (a core dump, a gzip pasted as text) is no evidence: it ends a record
            continue
        yield _CTRL.sub("", line.rstrip("\r\n")).replace("\ufffd\ufffd", "\ufffd")


def _garbage(line: str) -> bool:
    """Invalid UTF-8 and mostly non-ASCII: binary bytes, not a log line (a Chinese or Portuguese log line
    is valid UTF-8; one odd byte in a name is a small share)."""
    non_ascii = sum(1 for c in line if c > "\x7f")
    return line.count("\ufffd") * 8 > len(line) or non_ascii * 4 > len(line)


def _unwrap(line: str) -> tuple[str, str | None, str, str]:
    """(body, time, stream key, kind of wrapper) of a line: prefixes peeled off, the innermost time kept."""
    body, time, key, wrap = line.rstrip(), None, "", "plain"
    for _ in range(6):
        m = _QUOTE.match(body) if body.startswith(">") else None
        if m:
            body = body[m.end():]
            continue
        m = _PM2_PREFIX.match(body)
        if m:
            key, body, wrap = "pm2:" + m.group(0).split("|")[0], body[m.end():], "pm2"
            continue
        m = _ISO_ANY.match(body)
        if m and not body.startswith("{"):
            time, body = _iso(m.group(1).replace(",", ".").replace(" UTC", "Z")) or m.group(1), body[m.end():]
            continue
        m = _EPOCH_COL.match(body)
        if m:
            v = float(m.group(1))
            time, body = _epoch(v / 1000 if v > 1e11 else v), body[m.end():]
            continue
        m = _JOURNAL_SHORT.match(body)
        if m:
            key, wrap = "unit:" + m.group("unit"), "journald"
            time = time or _iso(m.group("time")) or m.group("time")
            body = m.group("msg")
            continue
        m = _SYSLOG_TAIL.match(body) if time is not None and wrap != "journald" else None
        if m:
            wrap, body = "journald", m.group("msg")  # same stream: a dyno's caret block starts unprefixed
            continue
        m = _SYSLOG_TIME.match(body) if time is None else None
        if m:
            time, body = m.group(0).strip(), body[m.end():]
            continue
        m = _SLASH_TIME.match(body)
        if m:
            time, body = time or m.group(1), body[m.end():]
            continue
        break
    return body, time, key, wrap


def _parse_body(body: str, raw: str, time: str | None, wrap: str) -> Record | None:
    return _parse_unwrapped(body, raw.rstrip()[:MAX_LINE], time, wrap)


def parse_line(line: str) -> Record | None:
    """One record from one line (None for blank lines); wrappers (pm2, timestamps, journald) are
    peeled off first."""
    raw = line.rstrip()
    body, time, _, wrap = _unwrap(_ANSI.sub("", raw) if "\x1b" in raw else raw)
    return _parse_unwrapped(body, raw, time, wrap)


def _parse_unwrapped(body: str, raw: str, time: str | None, wrap: str) -> Record | None:
    stripped = body.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        doc = _json(stripped)
        if doc is not None:
            if "MESSAGE" in doc or "__REALTIME_TIMESTAMP" in doc:
                return _journal_json(doc, raw)
            rec = _pino(doc, raw, time)
            if wrap == "journald":
                rec.source = "journald"
            return rec
    m = _PRETTY.match(stripped) or _PRETTY_LEVEL_FIRST.match(stripped)
    if m:
        rec = Record(text=m.group("msg"), raw=raw, time=time or _iso(m.group("time") or "") or m.group("time"),
                     level=m.group("level").lower(), source="pino-pretty")
        _fill_code(rec, rec.text)
        return rec
    rec = Record(text=stripped, raw=raw, time=time, source="journald" if wrap == "journald" else "plain")
    lm = _LEVEL_WORD.search(stripped)
    if lm:
        rec.level = _level_name(lm.group(1))
    _fill_code(rec, stripped)
    return rec


def _level_name(v: str) -> str | None:
    if v.isdigit():
        return LEVELS.get(int(v))
    v = v.lower()
    return {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal"}.get(v, v)


def _journal_json(doc: dict[str, Any], raw: str) -> Record | None:
    msg = doc.get("MESSAGE")
    if isinstance(msg, list):  # journald exports non-UTF-8 messages as byte arrays
        msg = bytes(x & 0xFF for x in msg if isinstance(x, int)).decode("utf-8", "replace")
    if not isinstance(msg, str):
        msg = "" if msg is None else str(msg)
    inner = parse_line(_CTRL.sub("", msg)[:MAX_LINE])
    if inner is None:
        return None
    ts = doc.get("__REALTIME_TIMESTAMP")
    if inner.time is None and isinstance(ts, (str, int)) and str(ts).isdigit():
        inner.time = _epoch(int(ts) / 1e6)
    if inner.level is None:
        pri = str(doc.get("PRIORITY", ""))
        inner.level = {"0": "fatal", "1": "fatal", "2": "fatal", "3": "error", "4": "warn"}.get(pri)
    inner.raw = inner.raw if inner.source == "pino" else msg[:MAX_LINE]
    inner.source = "journald"
    unit = doc.get("_SYSTEMD_UNIT") or doc.get("SYSLOG_IDENTIFIER")
    if unit:
        inner.fields.setdefault("unit", str(unit))
    return inner


def _pino(doc: dict[str, Any], raw: str, time: str | None) -> Record:
    tv = doc.get("time")
    if isinstance(tv, (int, float)) and not isinstance(tv, bool) and 1e11 < tv < 1e14:
        time = _epoch(tv / 1000)
    elif isinstance(tv, str):
        time = _iso(tv) or tv
    lv = doc.get("level")
    level = LEVELS.get(lv) if isinstance(lv, int) else (lv if isinstance(lv, str) else None)
    msg = doc.get("msg") if isinstance(doc.get("msg"), str) else ""
    rest = {k: v for k, v in doc.items() if k not in ("level", "time", "pid", "hostname", "msg")}
    detail = json.dumps(rest, separators=(",", ":"), default=str)[:MAX_LINE] if rest else ""
    rec = Record(text=f"{msg} {detail}".strip(), raw=raw, time=time, level=level, source="pino",
                 fields={"msg": msg})
    code = _pino_code(doc)
    rec.code = code
    _fill_code(rec, rec.text)
    return rec


def _pino_code(doc: dict[str, Any]) -> int | None:
    """The Boom statusCode Baileys puts on `connection closed` / `stream errored out` objects."""
    stack: list[Any] = [doc]
    seen = 0
    while stack and seen < 200:
        cur = stack.pop()
        seen += 1
        if isinstance(cur, dict):
            out = cur.get("output")
            if isinstance(out, dict) and isinstance(out.get("statusCode"), int):
                return int(out["statusCode"])
            if isinstance(cur.get("statusCode"), int):
                return int(cur["statusCode"])
            stack.extend(v for v in cur.values() if isinstance(v, (dict, list)))
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, (dict, list)))
    return None


def _fill_code(rec: Record, text: str) -> None:
    """Code and conflict type from text. Stream Errored (conflict) is 401 for device_removed and 440
    for replaced: decided by the type, never by the message alone. Each regex runs only when the
    literal it needs is in the line (a substring test costs a fraction of a search)."""
    low = prefilter.fold(text) if rec.conflict_type is None or rec.code is None else ""
    if rec.conflict_type is None and ("device_removed" in low or "replaced" in low):
        m = _CONFLICT.search(text)
        if m:
            rec.conflict_type = m.group(1).lower()
    if rec.code is None:
        for need, rx in _CODE_RES:
            m = rx.search(text) if need in text else None
            if m:
                rec.code = int(next(g for g in m.groups() if g))
                break
    if rec.code is None and ("los" in low or "onnect" in low or "otivo" in low or "az" in low
                             or "eas" in low):
        m = _CLOSE_NEAR.search(text)
        if m:
            rec.code = int(m.group(1))
    if rec.code is None and ("onnect" in low or "timed" in low or "restart" in low or "logged" in low
                             or "method" in low):
        m = _CODE_THEN_CLOSE.search(text)
        if m:
            rec.code = int(m.group(1))
    if rec.code is None and ("Reason" in text or "eason" in text or "ed" in text or "Mismatch" in text
                             or "Service" in text or "Session" in text or "Out" in text):
        m = _REASON_NAME.search(text)
        name = next((g for g in m.groups() if g), None) if m else None
        if name in DISCONNECT_REASON_CODES:
            rec.code = DISCONNECT_REASON_CODES[name]
    if rec.code is None and rec.conflict_type:
        rec.code = 401 if rec.conflict_type == "device_removed" else 440
    if rec.code is None and "restart required" in low and _RESTART.search(text):
        rec.code = 515


def _json(s: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(s)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _epoch(seconds: float) -> str | None:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _iso(s: str) -> str | None:
    """Normalise an ISO-ish stamp; a stamp without a zone is kept as written (pm2 logs local time)."""
    try:
        dt = datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.isoformat()
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
