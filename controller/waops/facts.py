"""Collect the facts document (CONTRACTS.md, contract 2) from a host in one round trip.

`waops-host facts --json` when the agent is installed: one round trip, nothing sent. A host without
it answers with exit status NEED_SOURCE, and only then is the agent streamed in one more round trip, as
Ansible streams its modules: the waops_host package zipped (~80 KB) on stdin to `python3 -I -c BOOT`,
which puts the zip in an anonymous memory file and imports the package from it with zipimport (nothing
written to the host's disk, nothing left behind). A provisioned host never pays for the transfer.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import waops_host
from waops.errors import WaopsError
from waops.model import Facts, SchemaError, parse_facts
from waops.transport import Transport
from waops_host.schema import FACTS_SCHEMA as SCHEMA

if TYPE_CHECKING:
    import zipfile

NEED_SOURCE = 97  # the probe's answer when the host has no agent installed
PROBE = ("if command -v waops-host >/dev/null 2>&1; then exec waops-host facts --json; "
         f"else exit {NEED_SOURCE}; fi")
# Run on the host by `python3 -I -S -c` (no PYTHONPATH, user site, current directory or `site`: the agent
# needs the standard library alone, and skips site's start-up cost): the zip from stdin
# into a memfd (close-on-exec, never on disk), then zipimport through /proc/self/fd. Every module the
# command needs is imported before the agent forks its bot-user children.
BOOT = ("import os,sys;fd=os.memfd_create('waops_host');w=open(fd,'wb',closefd=False);"
        "w.write(sys.stdin.buffer.read());w.close();sys.path.insert(0,'/proc/self/fd/%d'%fd);"
        "sys.argv[0]='waops-host';from waops_host.cli import run;sys.exit(run())")


def stream_command(argv: list[str]) -> str:
    """The shell command that runs the streamed agent (stdin: agent_bytes()) with `argv`."""
    return " ".join(shlex.quote(a) for a in ["exec", "python3", "-I", "-S", "-c", BOOT, *argv])


STREAMED = stream_command(["facts", "--json"])


class FactsError(WaopsError):
    """The host answered, but not with a facts document (agent missing, not provisioned, crashed)."""


def probe_command(become: bool = False, script: str = PROBE) -> str:
    # sudo -n: never prompt; a host that needs a sudo password fails clearly instead of hanging
    return f"sudo -n sh -c {shlex.quote(script)}" if become else script


def agent_bytes() -> bytes:
    try:
        return agent_zip()
    except OSError as exc:
        raise FactsError(f"cannot read the host agent package: {exc}") from None


@cache
def agent_zip() -> bytes:
    """The waops_host package as a zip: sources, data, and this Python's bytecode of each module as an
    unchecked hash-based .pyc (PEP 552), which zipimport takes without a timestamp check; a host whose
    Python has another magic number skips it and compiles the source. Fixed timestamps: the same bytes.
    (zipfile and the compiler's helpers are imported here: a provisioned host never needs them.)"""
    import io
    import zipfile

    root = Path(waops_host.__file__).resolve().parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted([*root.glob("*.py"), *root.glob("*.json")]):
            data = path.read_bytes()
            _add(z, f"waops_host/{path.name}", data)
            if path.suffix == ".py":
                _add(z, f"waops_host/{path.name}c", _pyc(data, f"waops_host/{path.name}"))
    return buf.getvalue()


def _add(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    import zipfile

    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)


def _pyc(source: bytes, name: str) -> bytes:
    import importlib.util
    import marshal

    code = compile(source, name, "exec", dont_inherit=True)
    flags = (0b01).to_bytes(4, "little")  # hash-based, source not checked
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source) + marshal.dumps(code)


def collect(transport: Transport, timeout: float, become: bool = False, source: bytes | None = None) -> Facts:
    res = transport.run(probe_command(become), timeout=timeout)
    if res.exit_status == NEED_SOURCE and not res.stdout.strip():
        res = transport.run(probe_command(become, STREAMED), stdin=agent_bytes() if source is None else source,
                            timeout=timeout)
    return parse(res.stdout, res.stderr, res.exit_status, transport.name)


def parse(stdout: bytes, stderr: bytes, status: int, host: str = "host") -> Facts:
    """The boundary: the agent's output -> typed facts (FactsError with the reason when it is not a
    facts document of this schema and shape). Everything after reads the records."""
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
    try:
        return parse_facts(doc)
    except SchemaError as exc:
        raise FactsError(f"{host}: malformed facts from waops-host: {exc}") from None


def _last_line(b: bytes) -> str:
    lines = [ln.strip() for ln in b.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
