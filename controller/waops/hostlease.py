"""The bot's repair lease on its host, as `waops recover` holds it.

The lease lives on the bot's host (`waops-host repair begin|renew|end`), so two controllers (or two
laptops) never repair one bot at once, and the host's own backup and check see the repair from the
first stop to the last verify, a QR wait included. It is taken before the first look at the bot,
renewed in the background while steps and waits run, and ended on every way out; a controller that
dies stops renewing and the lease expires after its TTL.

The agent is streamed zipped (`python3 -I -c BOOT repair ...`), as facts does, so the lease works the same on
a host whose installed agent is older.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shlex
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from waops.errors import WaopsError
from waops.locking import EXIT_LOCK_BUSY, LockBusyError

DEFAULT_TTL_S = 300
RENEW_EVERY_S = 60

# argv after `waops-host` -> (exit status, the JSON document or None, stderr text)
AgentCall = Callable[[list[str]], tuple[int, dict[str, Any] | None, str]]


def owner_id() -> str:
    """Who holds the lease, as the other operator will read it: user@machine:pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    raw = f"{user}@{socket.gethostname()}:{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.:@+-]", "_", raw)[:128]


def first_result(doc: dict[str, Any] | None) -> dict[str, Any]:
    results = doc.get("results") if isinstance(doc, dict) else None
    first = results[0] if isinstance(results, list) and results else None
    return first if isinstance(first, dict) else {}


def ssh_agent(host: Any, timeout: float) -> AgentCall:
    """Run the streamed agent on an inventory host over strict SSH (sudo -n when the login is not root)."""
    from waops.facts import agent_bytes, stream_command
    from waops.transport import for_host

    become = bool(getattr(host, "become", False)) and getattr(host, "user", None) not in (None, "root")

    def call(argv: list[str]) -> tuple[int, dict[str, Any] | None, str]:
        inner = stream_command(argv)
        command = f"sudo -n sh -c {shlex.quote(inner)}" if become else inner
        transport = for_host(host, timeout)
        try:
            res = transport.run(command, stdin=agent_bytes(), timeout=timeout)
        finally:
            transport.close()
        return res.exit_status, _json(res.stdout), res.stderr.decode("utf-8", "replace").strip()

    return call


def _json(raw: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        doc = json.loads(raw.decode("utf-8", "replace") or "null")
        return doc if isinstance(doc, dict) else None
    return None


class HostLease:
    """`with HostLease(call, "shop"):` holds the bot's repair lease; LockBusyError (75) names the holder."""

    def __init__(
        self,
        call: AgentCall,
        bot: str,
        owner: str | None = None,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        renew_every_s: float = RENEW_EVERY_S,
    ) -> None:
        self.call, self.bot, self.owner = call, bot, owner or owner_id()
        self.ttl_s, self.renew_every_s = ttl_s, renew_every_s
        self.lost: str | None = None  # set when a renewal failed: the repair no longer holds the host
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, action: str, *extra: str) -> dict[str, Any]:
        argv = ["repair", action, "--bot", self.bot, "--owner", self.owner, "--ttl", str(self.ttl_s), "--json", *extra]
        rc, doc, err = self.call(argv)
        r = first_result(doc)
        if rc == 0 and r.get("ok"):
            return r
        why = str(r.get("error") or (err.splitlines()[-1] if err else f"exit status {rc}"))
        if rc == EXIT_LOCK_BUSY:
            raise LockBusyError(why)
        raise WaopsError(f"repair lease ({action}): {why}")

    def begin(self) -> dict[str, Any]:
        r = self._run("begin")
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.bot}", daemon=True)
        self._thread.start()
        return r

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                self._run("renew")
                self.lost = None
            except Exception as exc:  # a blip is retried at the next tick, well inside the TTL
                self.lost = str(exc)

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with contextlib.suppress(Exception):  # unreachable now: the lease expires on its own
            self._run("end")

    def backup(self, reason: str = "post-repair") -> dict[str, Any]:
        """A verified backup of what the repair left, taken inside the lease."""
        rc, doc, err = self.call(["backup", "--reason", reason, "--bot", self.bot, "--owner", self.owner, "--json"])
        r = first_result(doc)
        if not r:
            r = {"ok": False, "error": err.splitlines()[-1] if err else f"exit status {rc}"}
        return r

    def __enter__(self) -> HostLease:
        self.begin()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end()
