"""Log fixtures in every format for every cause, written by us from docs/DOMAIN.md's facts.

Each cause is a short script of events; each format renders the same script the way a real bot's log
would show it (pino JSON, pino-pretty's multi-line objects, console.log's JS objects, logfmt, and the
wrappers journald, pm2, `docker logs -t`, a markdown quote and Heroku's log drain put around lines).
Lines a logger never sees (libsignal's
console output, node's fatal traces) are printed as they are, inside the wrapper only.

    python3 -m tests.logformats --write     # regenerate tests/fixtures/logs/formats/

tests/unit/test_log_formats.py checks the files are what this renders and that each is diagnosed right.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "fixtures" / "logs" / "formats"
T0 = 1761557587000  # 2025-10-27T09:33:07Z, ms; each event is one second later
LEVELS = {"info": 30, "warn": 40, "error": 50, "fatal": 60}


@dataclass(frozen=True)
class BoomError:
    """A Baileys Boom error as node prints it (message, one frame, then its properties)."""

    message: str
    status: int
    error: str
    data: Any = None


@dataclass(frozen=True)
class Log:
    level: str
    msg: str
    obj: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Raw:
    """Lines printed without the logger: libsignal's console.*, node's fatal output."""

    text: str


Event = Log | Raw


def _boom(status: int, error: str, message: str, data: Any = None) -> BoomError:
    return BoomError(message, status, error, data)


def _closed(status: int, error: str, message: str, data: Any = None) -> Log:
    return Log("info", "connection closed", {"err": _boom(status, error, message, data)})


def _stream_error(code: str, conflict: str | None = None) -> Log:
    node: dict[str, Any] = {"tag": "stream:error", "attrs": {"code": code}}
    if conflict:
        node["content"] = [{"tag": "conflict", "attrs": {"type": conflict}}]
    return Log("error", "stream errored out", {"node": node})


_OPEN = [Log("info", "connected to WA"), Log("info", "opened connection to WA"),
         Log("info", "connection update", {"connection": "open"})]
_BAD_MAC = Raw("Failed to decrypt message with any known session...\n"
               "Session error:Error: Bad MAC Error: Bad MAC\n"
               "    at Object.verifyMAC (/srv/bot/node_modules/libsignal/src/crypto.js:87:15)\n"
               "    at SessionCipher.doDecryptWhisperMessage "
               "(/srv/bot/node_modules/libsignal/src/session_cipher.js:250:16)")

# cause -> (code in the file name or None, events)
SCRIPTS: dict[str, tuple[int | None, list[Event]]] = {
    "healthy": (None, [*_OPEN, Log("info", "uploaded pre-keys", {"count": 30})]),
    "logged_out": (401, [*_OPEN, _stream_error("401", "device_removed"),
                         _closed(401, "Unauthorized", "Stream Errored (conflict)")]),
    "conflict": (440, [*_OPEN, _stream_error("440", "replaced"),
                       _closed(440, "Unknown", "Stream Errored (conflict)")]),
    "restart_required": (515, [Log("info", "connected to WA"), _stream_error("515"),
                               _closed(515, "Unknown", "Stream Errored (restart required)")]),
    "network": (408, [*_OPEN, Log("info", "connection errored", {
        "trace": "Error: WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)"}),
        _closed(408, "Request Time-out", "Connection was lost")]),
    "client_outdated": (405, [Log("info", "connected to WA"), _closed(
        405, "Method Not Allowed", "Connection Failure", {"reason": "405", "location": "cln"})]),
    "banned": (403, [Log("info", "connected to WA"), _closed(
        403, "Forbidden", "Connection Failure", {"reason": "403", "location": "frc"})]),
    "rate_limited": (429, [*_OPEN, Log("error", "failed to send message", {
        "err": _boom(500, "Internal Server Error", "rate-overlimit", 429)})]),
    "corrupt_keys": (None, [*_OPEN, *([_BAD_MAC] * 12),
                            Raw("Closing open session in favor of incoming prekey bundle\nNo session record")]),
    "crash": (None, [*_OPEN, Raw(
        "/srv/bot/store.js:41\n"
        "    const jid = msg.key.remoteJid\n"
        "                    ^\n"
        "\n"
        "TypeError: Cannot read properties of undefined (reading 'remoteJid')\n"
        "    at onMessage (/srv/bot/store.js:41:21)\n"
        "    at EventEmitter.emit (node:events:519:28)\n"
        "\n"
        "Node.js v20.11.1")]),
    "library_mismatch": (None, [Raw(
        "Error [ERR_REQUIRE_ESM]: require() of ES Module /srv/bot/node_modules/baileys/lib/index.js "
        "from /srv/bot/index.js not supported.\n"
        "    at Object.<anonymous> (/srv/bot/index.js:3:18) {\n"
        "  code: 'ERR_REQUIRE_ESM'\n"
        "}\n"
        "\n"
        "Node.js v20.11.1")]),
    "creds_lost": (None, [Log("error", "failed to load auth state", {"err": {
        "type": "SyntaxError", "message": "Unexpected end of JSON input",
        "stack": "SyntaxError: Unexpected end of JSON input\n    at JSON.parse (<anonymous>)\n"
                 "    at readData (/srv/bot/auth/creds.json)"}})]),
}


# ------------------------------------------------------------------------------------------ values
def _plain(v: Any) -> Any:
    """JSON form of a value (how pino serialises a Boom error)."""
    if isinstance(v, BoomError):
        return {"data": v.data, "isBoom": True, "isServer": False, "output": {
            "statusCode": v.status, "payload": {"statusCode": v.status, "error": v.error, "message": v.message},
            "headers": {}}}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _inspect(v: Any, indent: int = 0) -> str:
    """node's util.inspect, enough of it: single quotes, bare keys, errors with their stack first."""
    pad = " " * indent
    if isinstance(v, BoomError):
        body = _inspect({"data": v.data, "isBoom": True, "isServer": False, "output": {
            "statusCode": v.status, "payload": {"statusCode": v.status, "error": v.error, "message": v.message},
            "headers": {}}}, indent)
        return (f"Error: {v.message}\n{pad}    at WebSocketClient.<anonymous> "
                f"(/srv/bot/node_modules/baileys/lib/Socket/socket.js:529:13) {body}")
    if isinstance(v, dict):
        if not v:
            return "{}"
        inner = ",\n".join(f"{pad}  {k}: {_inspect(x, indent + 2)}" for k, x in v.items())
        return "{\n" + inner + f"\n{pad}}}"
    if isinstance(v, list):
        return "[ " + ", ".join(_inspect(x, indent + 2) for x in v) + " ]"
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'").replace("\n", "\\n") + "'"
    if v is None:
        return "null"
    return json.dumps(v)


def _flat(prefix: str, v: Any) -> list[tuple[str, Any]]:
    v = _plain(v)
    if isinstance(v, dict):
        return [kv for k, x in v.items() for kv in _flat(f"{prefix}.{k}" if prefix else k, x)]
    if isinstance(v, list):
        return [kv for k, x in enumerate(v) for kv in _flat(f"{prefix}.{k}", x)]
    return [(prefix, v)]


def _logfmt_value(v: Any) -> str:
    s = "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return json.dumps(s) if (not s or any(c in s for c in ' "=\n')) else s


# ------------------------------------------------------------------------------------------ styles
def _t(k: int) -> int:
    return T0 + 1000 * k


def _hms(k: int) -> str:
    s = (_t(k) // 1000) % 86400
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{_t(k) % 1000:03d}"


def _iso(k: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(_t(k) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def pino(e: Log, k: int) -> list[str]:
    doc = {"level": LEVELS[e.level], "time": _t(k), "pid": 812, "hostname": "bot-1", **_plain(e.obj),
           "msg": e.msg}
    return [json.dumps(doc, separators=(",", ":"))]


def pretty(e: Log, k: int) -> list[str]:
    lines = [f"[{_hms(k)}] {e.level.upper()} (812): {e.msg}"]
    for key, v in _plain(e.obj).items():
        text = json.dumps(v, indent=2) if isinstance(v, (dict, list)) else json.dumps(v)
        body = text.splitlines()
        lines.append(f"    {key}: {body[0]}")
        lines.extend("    " + b for b in body[1:])
    return lines


def console(e: Log, k: int) -> list[str]:
    if not e.obj:
        return [e.msg]
    return f"{e.msg} {_inspect(e.obj)}".splitlines()


def logfmt(e: Log, k: int) -> list[str]:
    pairs = [("time", _iso(k) + "Z"), ("level", e.level), ("msg", e.msg), *_flat("", e.obj)]
    return [" ".join(f"{key}={_logfmt_value(v)}" for key, v in pairs)]


Style = Callable[[Log, int], list[str]]


@dataclass(frozen=True)
class Format:
    style: Style
    prefix: Callable[[int], str] = lambda k: ""
    eol: str = "\n"
    ansi: bool = False


FORMATS: dict[str, Format] = {
    "pino": Format(pino),
    "pino-pretty": Format(pretty),
    "console": Format(console),
    "logfmt": Format(logfmt),
    "journald": Format(console, lambda k: f"Oct 27 {_hms(k)[:8]} bot-1 node[812]: "),
    "pm2": Format(pretty, lambda k: f"0|shop-bot  | {_iso(k)}: "),
    "docker": Format(pino, lambda k: f"{_iso(k)}.{_t(k) % 1000:03d}456789Z "),
    "ansi-crlf": Format(pretty, eol="\r\n", ansi=True),
    # pasted into an issue as a markdown quote, and a Heroku dyno's log drain
    "markdown-quote": Format(pretty, lambda k: "> "),
    "heroku": Format(console, lambda k: f"{_iso(k)}.{_t(k) % 1000:03d}000+00:00 app[web.1]: "),
}

_COLOUR = {"INFO": "\x1b[32mINFO\x1b[39m", "WARN": "\x1b[33mWARN\x1b[39m", "ERROR": "\x1b[31mERROR\x1b[39m"}


def render(cause: str, fmt: str) -> str:
    f = FORMATS[fmt]
    out: list[str] = []
    for k, e in enumerate(SCRIPTS[cause][1]):
        lines = e.text.split("\n") if isinstance(e, Raw) else f.style(e, k)
        if f.ansi:
            lines = [_ansi(line) for line in lines]
        out.extend(f.prefix(k) + line for line in lines)
    return f.eol.join(out) + f.eol


def _ansi(line: str) -> str:
    for word, coloured in _COLOUR.items():
        line = line.replace(f" {word} (", f" {coloured} (", 1)
    return line


def path(cause: str, fmt: str) -> Path:
    code = SCRIPTS[cause][0]
    return OUT / f"{cause}--{code or 'none'}--{fmt}.log"


def write() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for cause in SCRIPTS:
        for fmt in FORMATS:
            path(cause, fmt).write_bytes(render(cause, fmt).encode())
    return len(SCRIPTS) * len(FORMATS)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    print(f"{write()} fixtures written to {OUT}")
