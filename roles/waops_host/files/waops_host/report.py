"""`waops-host keepalive`: one request on a bot's keep-alive socket, answered as root.

The waops_bot role's socket unit runs this once per connection (systemd `Accept=yes`), stdin and stdout on
the connection, with `--bot` fixed by the unit: only that bot's user can connect, so a request can only
ever speak for its own bot. Three requests exist:
- nothing (the bot connects and closes, or says nothing): the keep-alive backup, as always;
- one line `{"close": {"code": 401, "at": "<ISO time>"}}`: the bot's WhatsApp connection just closed. The
  host gives the bot a few seconds to reconnect on its own (RECONNECT_GRACE_S), then runs the quick check
  of this bot with the close in hand: a session that is not open opens its incident now instead of after
  `session_down_minutes`, and the check's signed webhook carries it to
  the EDA event source within seconds, in the shape the rulebook already matches;
- one line `{"decrypt": {"failures": 12, "at": "<ISO time>"}}`: messages keep failing to decrypt (Bad MAC)
  while the connection stays open, so no close would ever tell. The quick check runs at once with the
  count in hand and opens `decrypt_flood` when it reaches the flood (checkconf.DECRYPT_FLOOD).

The bot user is the adversary (docs/THREAT-MODEL.md). The request is read with a size cap and a
deadline, parsed strictly (one object, known keys, a code 0-999 or null, an ISO time kept only inside the
last ten minutes), never names a path, and reports are rate limited per bot (a token bucket in root's
lock directory): a flood costs at most one quick check every REFILL_S seconds after a short burst.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .base import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AgentError, iso, log, parse_iso, read_small_json, write_json_file
from .locks import file_lock

if TYPE_CHECKING:
    import argparse

    from .config import BotConfig

MAX_REQUEST = 512  # bytes: a close report is under 100
READ_DEADLINE_S = 2.0  # the agent writes its line at once; a silent connection is a backup request
BURST = 4  # reports taken at once (a 401 retried three times, then the stop)
REFILL_S = 15.0  # then one report per this many seconds
FLAP_WINDOW_S = 120  # this many closes within the window: the session is flapping (a 440 loop)
FLAP_CLOSES = 3
MAX_FAILURES = 10**6  # failed decryptions in one report: more is no count a bot can have seen
MAX_CLOCK_SKEW_S = 600  # the bot's `at` is its word: kept only inside the last ten minutes
# A close the bot gets over by itself (515 after a link, a network blip) is open again within a second or
# two: the health file is watched this long before the check runs, so those raise nothing.
RECONNECT_GRACE_S = 5.0


class Refused(Exception):
    """A request that is not one of the two shapes (the reason goes to the journal and the answer)."""


def read_request(fd: int, limit: int = MAX_REQUEST, deadline_s: float = READ_DEADLINE_S) -> bytes:
    """Up to limit+1 bytes, until end of file, a newline or the deadline, whichever comes first."""
    data = b""
    end = time.monotonic() + deadline_s
    while len(data) <= limit and b"\n" not in data:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def parse_request(data: bytes, now: float) -> dict[str, Any] | None:
    """None for a backup request (nothing said); else the close or decrypt report (`kind`), validated.
    Refused otherwise."""
    if len(data) > MAX_REQUEST:
        raise Refused(f"request longer than {MAX_REQUEST} bytes")
    text = data.strip()
    if not text:
        return None
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused("not a JSON line") from None
    if not isinstance(doc, dict) or len(doc) != 1 or next(iter(doc)) not in ("close", "decrypt") \
            or not isinstance(doc[next(iter(doc))], dict):
        raise Refused('unknown request (expected {"close": {"code": N, "at": TIME}} '
                      'or {"decrypt": {"failures": N, "at": TIME}})')
    if "decrypt" in doc:
        decrypt = doc["decrypt"]
        if not set(decrypt) <= {"failures", "at"}:
            raise Refused("unknown field in the decrypt report")
        failures = decrypt.get("failures")
        if type(failures) is not int or not 1 <= failures <= MAX_FAILURES:
            raise Refused(f"failures must be an integer from 1 to {MAX_FAILURES}")
        return {"kind": "decrypt", "failures": failures, "at": _recent(decrypt.get("at"), now)}
    close = doc["close"]
    if not set(close) <= {"code", "at"}:
        raise Refused("unknown field in the close report")
    code = close.get("code")
    if code is not None and (type(code) is not int or not 0 <= code <= 999):
        raise Refused("code must be an integer from 0 to 999, or null")
    return {"kind": "close", "code": code, "at": _recent(close.get("at"), now)}


def _recent(at: Any, now: float) -> str | None:
    """The bot's time of a report, shown only: root's clock decides, so it is clamped to the recent past."""
    when = parse_iso(at, naive="utc") if isinstance(at, str) and len(at) <= 40 else None
    if at is not None and when is None:
        raise Refused("at must be an ISO 8601 time")
    if when is None:
        return None
    return iso(datetime.fromtimestamp(min(max(when.timestamp(), now - MAX_CLOCK_SKEW_S), now), UTC))


def admit(state: dict[str, Any], now: float, close: bool = True) -> tuple[bool, int]:
    """Token bucket and close history of one bot (state is changed in place): (taken, closes within
    FLAP_WINDOW_S, this one included if `close`). Refused close reports count as closes too: a flood
    is a flapping bot. Every kind of report draws on the one bucket."""
    tokens = state.get("tokens")
    at = state.get("at")
    tokens = float(tokens) if isinstance(tokens, (int, float)) else float(BURST)
    at = float(at) if isinstance(at, (int, float)) and at <= now else now
    tokens = min(float(BURST), tokens + (now - at) / REFILL_S)
    closes = [t for t in state.get("closes", []) if isinstance(t, (int, float)) and now - FLAP_WINDOW_S < t <= now]
    closes = [*closes[-31:], now] if close else closes[-32:]
    taken = tokens >= 1.0
    state.update(tokens=tokens - 1.0 if taken else tokens, at=now, closes=closes)
    return taken, len(closes)


def wait_for_reconnect(cfg: BotConfig, grace_s: float = RECONNECT_GRACE_S) -> None:
    """Until the health file (read as the bot, like the check reads it) says anything but reconnecting,
    or the grace is over. `stopped` and `waiting_link` end the wait at once: nothing will come back."""
    from .facts import health_facts

    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        health = health_facts(cfg)
        if not isinstance(health, dict) or health.get("connection") not in ("close", "connecting"):
            return
        time.sleep(0.25)


def answer(doc: dict[str, Any]) -> None:
    """One JSON line back to the bot (it learns nothing it could not see itself)."""
    sys.stdout.write(json.dumps(doc) + "\n")


def take(args: argparse.Namespace, cfg: BotConfig, close: bool) -> tuple[bool, int]:
    """admit() on the bot's report state in root's lock directory, under its lock."""
    path = os.path.join(args.lock_dir, f"waops-{cfg.name}.reports.json")
    with file_lock(os.path.join(args.lock_dir, f"waops-{cfg.name}.report.lock"), 5.0,
                   "another report of this bot is being taken"):
        try:
            state = read_small_json(path)
        except (OSError, ValueError):  # first report, or a state from another version
            state = {}
        state = state if isinstance(state, dict) else {}
        taken, closes = admit(state, time.time(), close)
        write_json_file(path, state)
    return taken, closes


def report_decrypt(args: argparse.Namespace, cfg: BotConfig, decrypt: dict[str, Any]) -> int:
    taken, _ = take(args, cfg, close=False)
    if not taken:
        return _dropped(cfg, f"decrypt report ({decrypt['failures']} failures)")
    return _raise(args, cfg, decrypt, f"decrypt failures reported ({decrypt['failures']})")


def _dropped(cfg: BotConfig, what: str) -> int:
    log(f"{cfg.name}: {what} dropped: rate limited")
    answer({"command": "report", "ok": False, "error": "rate limited"})
    return EXIT_FAILED


def _raise(args: argparse.Namespace, cfg: BotConfig, report: dict[str, Any], what: str) -> int:
    """Run the quick check with the report at once, log what it opened, answer the bot."""
    from . import check  # the check's modules load only when a report is taken

    r = check.check_bot(cfg, args, datetime.now(UTC), report)
    opened = [e for e in r["events"] if e.startswith("open ")]
    log(f"{cfg.name}: {what}: " + ("; ".join(opened) if opened else "active: " + (", ".join(r["active"]) or "none")))
    answer({"command": "report", "ok": True, "active": r["active"]})
    return EXIT_OK


def report_close(args: argparse.Namespace, cfg: BotConfig, close: dict[str, Any]) -> int:
    taken, closes = take(args, cfg, close=True)
    if not taken:
        return _dropped(cfg, f"close report (code {close['code']})")
    report = {**close, "closes": closes, "window_s": FLAP_WINDOW_S, "flapping": closes >= FLAP_CLOSES}
    if not report["flapping"]:
        wait_for_reconnect(cfg)
    return _raise(args, cfg, report, f"close reported (code {close['code']}, {closes} in {FLAP_WINDOW_S} s)")


def main(args: argparse.Namespace, configs: list[BotConfig]) -> int:
    if not args.bot or len(configs) != 1:
        raise AgentError("keepalive: --bot NAME is required (the socket unit names its bot)", EXIT_USAGE)
    (cfg,) = configs
    try:
        report = parse_request(read_request(sys.stdin.fileno()), time.time())
    except Refused as why:
        log(f"{cfg.name}: keep-alive request refused: {why}")
        answer({"command": "report", "ok": False, "error": str(why)})
        return EXIT_USAGE
    if report is not None:
        return (report_decrypt if report["kind"] == "decrypt" else report_close)(args, cfg, report)
    from .cli import cmd_backup, h_backup, per_bot

    args.cmd = "backup"  # the answer a bot's backup request has always had
    return per_bot(args, configs, lambda c: cmd_backup(args, c), True, h_backup)
