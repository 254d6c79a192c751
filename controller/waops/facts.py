"""Collect the facts document (CONTRACTS.md, contract 2) from a host in one round trip.

`waops-host facts --json` when the agent is installed: one round trip, nothing sent. A host without
it answers with exit status NEED_SOURCE, and only then is the agent's source (~90 KB) streamed to
`python3 - facts --json` in a second round trip: a provisioned host never pays for the transfer.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from waops.errors import WaopsError
from waops.transport import Transport

SCHEMA = 1
NEED_SOURCE = 97  # the probe's answer when the host has no agent installed
PROBE = ("if command -v waops-host >/dev/null 2>&1; then exec waops-host facts --json; "
         f"else exit {NEED_SOURCE}; fi")
STREAMED = "exec python3 - facts --json"


class FactsError(WaopsError):
    """The host answered, but not with a facts document (agent missing, not provisioned, crashed)."""


def probe_command(become: bool = False, script: str = PROBE) -> str:
    # sudo -n: never prompt; a host that needs a sudo password fails clearly instead of hanging
    return f"sudo -n sh -c {shlex.quote(script)}" if become else script


def agent_bytes() -> bytes:
    from waops.assets import agent_source

    try:
        return agent_source().read_bytes()
    except OSError as exc:
        raise FactsError(f"cannot read the host agent source: {exc}") from None


def collect(transport: Transport, timeout: float, become: bool = False, source: bytes | None = None) -> dict[str, Any]:
    res = transport.run(probe_command(become), timeout=timeout)
    if res.exit_status == NEED_SOURCE and not res.stdout.strip():
        res = transport.run(probe_command(become, STREAMED), stdin=agent_bytes() if source is None else source,
                            timeout=timeout)
    return parse(res.stdout, res.stderr, res.exit_status, transport.name)


def parse(stdout: bytes, stderr: bytes, status: int, host: str = "host") -> dict[str, Any]:
    text = stdout.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("bots"), list):
        why = _last_line(stderr) or _last_line(stdout) or f"exit status {status}"
        raise FactsError(f"{host}: no facts from waops-host ({why})")
    if doc.get("schema") != SCHEMA:
        raise FactsError(f"{host}: facts schema {doc.get('schema')!r}, this waops reads schema {SCHEMA}")
    why = shape_error(doc)
    if why:
        raise FactsError(f"{host}: malformed facts from waops-host: {why}")
    return doc


# Contract 2's containers and their types: checked once here, so that the rules can trust `.get()` and
# iteration, and one host with a broken or hostile agent fails alone instead of aborting the fleet.
_BOT_SHAPE: dict[str, type] = {"process": dict, "health": dict, "logs": dict, "auth": dict, "backups": dict,
                               "library": dict, "node": dict, "disk": dict}
_NESTED: dict[tuple[str, str], type] = {
    ("logs", "matched"): list, ("logs", "tail"): list, ("auth", "creds"): dict, ("auth", "db"): dict,
    ("auth", "by_type"): dict, ("backups", "latest"): dict, ("backups", "latest_restorable"): dict,
    ("health", "last_disconnect"): dict, ("health", "keepalive"): dict,
}


def shape_error(doc: dict[str, Any]) -> str | None:
    """Why `doc` does not have contract 2's shape, or None. None values stand for "absent"."""
    for k, bot in enumerate(doc["bots"]):
        if not isinstance(bot, dict):
            return f"bots[{k}] is {type(bot).__name__}, expected an object"
        if not isinstance(bot.get("bot"), str) or not bot["bot"]:
            return f"bots[{k}].bot is not a bot name"
        for key, kind in _BOT_SHAPE.items():
            if bot.get(key) is not None and not isinstance(bot[key], kind):
                return f"bots[{k}].{key} is {type(bot[key]).__name__}, expected {_NAME[kind]}"
        for (outer, inner), kind in _NESTED.items():
            value = (bot.get(outer) or {}).get(inner)
            if value is not None and not isinstance(value, kind):
                return f"bots[{k}].{outer}.{inner} is {type(value).__name__}, expected {_NAME[kind]}"
    return None


_NAME = {dict: "an object", list: "a list"}


def _last_line(b: bytes) -> str:
    lines = [ln.strip() for ln in b.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
