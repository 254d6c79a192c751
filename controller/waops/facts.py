"""Collect the facts document (CONTRACTS.md, contract 2) from a host in one round trip.

`waops-host facts --json` when the agent is installed; otherwise the agent's source is streamed to
`python3 - facts --json`. The source is sent either way (one round trip, no `which` first); an
installed agent simply does not read it.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from waops.errors import WaopsError
from waops.transport import Transport

SCHEMA = 1
PROBE = ("if command -v waops-host >/dev/null 2>&1; then exec waops-host facts --json; "
         "else exec python3 - facts --json; fi")


class FactsError(WaopsError):
    """The host answered, but not with a facts document (agent missing, not provisioned, crashed)."""


def probe_command(become: bool = False) -> str:
    # sudo -n: never prompt; a host that needs a sudo password fails clearly instead of hanging
    return f"sudo -n sh -c {shlex.quote(PROBE)}" if become else PROBE


def agent_bytes() -> bytes:
    from waops.assets import agent_source

    try:
        return agent_source().read_bytes()
    except OSError as exc:
        raise FactsError(f"cannot read the host agent source: {exc}") from None


def collect(transport: Transport, timeout: float, become: bool = False, source: bytes | None = None) -> dict[str, Any]:
    res = transport.run(probe_command(become), stdin=agent_bytes() if source is None else source, timeout=timeout)
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
    return doc


def _last_line(b: bytes) -> str:
    lines = [ln.strip() for ln in b.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
