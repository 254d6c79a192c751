"""Prove a bot works again: fresh facts say the connection is open and nothing new is wrong for a whole
open window, on one and the same connection (a 440 loop or a crash loop flips between states; a window
longer than a flapping cycle, and `session_started_at` unchanged across it, catch a flap between two
probes), then, when the inventory configures a round-trip hook, a test message goes through the bot
and comes back. When the diagnosis settles on another cause with its own fix, waiting stops at once and
says so. While a new link is pending, the QR code or pairing code is handed to `on_link` each time it
changes, and the time a person needed is measured.

Pure control flow over two callables (probe, round trip), so it is tested without a host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from waops.errors import UnreachableError
from waops.model import BotFacts, Health, LinkRequest, bot_facts


class DiagnosisLike(Protocol):
    cause: str
    code: int | None
    evidence: list[str]


@dataclass
class BotState:
    """One look at a bot: its diagnosis and its typed facts entry (contract 2). A JSON entry given here
    (a test, a saved entry) is read into the record once, in __post_init__."""

    diagnosis: Any
    facts: BotFacts = field(default_factory=BotFacts)

    def __post_init__(self) -> None:
        self.facts = bot_facts(self.facts)

    @property
    def health(self) -> Health:
        """The health file the facts carry (contract 5); every field None when there is none."""
        return self.facts.health or Health()

    @property
    def connection(self) -> str | None:
        c = self.health.connection
        if c:
            return c
        # A bot without the keep-alive agent (an adopted one) writes no health file: its running process
        # and its newest log records (the connection opened, nothing failed after) are the word there is.
        if self.facts.health is None and getattr(self.diagnosis, "rule", None) == "opened":
            return "open"
        return None

    def link(self, host: str) -> LinkRequest:
        return LinkRequest.from_health(self.facts.health, bot=self.facts.bot or "", host=host)


# Causes that waiting cannot change while the bot is connected (a folder does not shrink by itself): seen
# this many probes in a row after a fix, the verify gives up at once and the rollback chain goes on.
SETTLED_CAUSES = {"file_bloat": 3}

# How long one connection must stay open before it counts: longer than a 440 flapping cycle (two copies
# kick each other every few seconds).
OPEN_WINDOW_S = 10.0
# Causes that waiting does not fix and that have a fix of their own: when the diagnosis settles on one of
# these (MOVED_PROBES probes in a row) while another cause is being fixed, the verify stops.
MOVED_CAUSES = frozenset({"corrupt_keys", "logged_out", "creds_lost", "file_bloat", "library_mismatch",
                          "client_outdated", "conflict", "banned", "rate_limited"})
MOVED_PROBES = 3

Probe = Callable[[], BotState]  # raises UnreachableError when the host cannot be reached
RoundTrip = Callable[[float], tuple[bool, str]]  # (timeout) -> (ok, detail)


@dataclass
class VerifyResult:
    ok: bool
    detail: str
    elapsed_s: float
    human_wait_s: float = 0.0
    last: BotState | None = None
    link_shown: bool = False
    moved_to: str | None = None  # the cause the diagnosis settled on instead of the one being fixed


def is_working(state: BotState) -> tuple[bool, str]:
    """Open, fresh, healthy by the same rules as `waops diagnose`."""
    d = state.diagnosis
    conn = state.connection
    if d.cause != "healthy":
        code = f" ({d.code})" if getattr(d, "code", None) is not None else ""
        return False, f"diagnosis {d.cause}{code}, connection {conn or 'unknown'}"
    if conn != "open":
        return False, f"connection {conn or 'unknown'}"
    return True, "connection open, diagnosis healthy"


# The inventory's `waops_verify_roundtrip_command`: unset, empty or `off` means no round trip.
ROUNDTRIP_VAR = "waops_verify_roundtrip_command"
ROUNDTRIP_OFF = ("", "off", "false", "no")


def command_round_trip(command: str | None, *, host: str, bot: str, phone: str | None) -> RoundTrip | None:
    """The inventory's round-trip hook: a command run on the controller (no shell; words split as a shell
    would) with the bot in its environment (WAOPS_HOST, WAOPS_BOT, WAOPS_BOT_PHONE, WAOPS_ROUNDTRIP_TIMEOUT).
    Exit 0 = a test message went through the bot and came back; its last output line is the detail.
    None when the hook is off, or the bot has no phone to send to."""
    if command is None or command.strip().lower() in ROUNDTRIP_OFF or not phone:
        return None
    import shlex

    argv = shlex.split(command)

    def run(timeout: float) -> tuple[bool, str]:
        import os
        import subprocess

        env = dict(os.environ, WAOPS_HOST=host, WAOPS_BOT=bot, WAOPS_BOT_PHONE=phone,
                   WAOPS_ROUNDTRIP_TIMEOUT=f"{timeout:g}")
        try:
            p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return False, f"round trip: {argv[0]} did not finish within {timeout + 10:.0f}s"
        except OSError as exc:
            return False, f"round trip: cannot run {argv[0]}: {exc}"
        lines = (p.stdout.strip() or p.stderr.strip()).splitlines()
        detail = lines[-1][:200] if lines else f"exit {p.returncode}"
        return p.returncode == 0, detail if p.returncode == 0 else f"round trip failed: {detail}"

    return run


def wait_verified(
    probe: Probe,
    *,
    timeout_s: float,
    host: str = "",
    round_trip: RoundTrip | None = None,
    wait_for_link: bool = False,
    on_link: Callable[[LinkRequest], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    interval_s: float = 2.0,
    settle_s: float = OPEN_WINDOW_S,
    fixing: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyResult:
    """Poll until the bot is proven to work or `timeout_s` passes."""
    start = clock()
    deadline = start + timeout_s
    first_ok: float | None = None
    shown: tuple[str | None, str | None] | None = None
    link_at: float | None = None
    human = 0.0
    last: BotState | None = None
    detail = "not checked"
    rt_last = ""  # the last failed round trip, kept for the final message
    settled = 0
    moved = 0
    session: Any = None  # session_started_at of the connection the open window is about
    flaps = 0

    def status(text: str) -> None:
        if on_status is not None:
            on_status(text)

    while True:
        if cancelled():
            return VerifyResult(False, "cancelled", clock() - start, human, last, link_at is not None)
        try:
            last = probe()
        except UnreachableError as exc:
            first_ok, detail = None, f"unreachable: {exc}"
            last = None
        if last is not None:
            link = last.link(host)
            if wait_for_link and link.pending and (link.qr, link.pairing_code) != shown:
                shown = (link.qr, link.pairing_code)
                if link_at is None:
                    link_at = clock()
                if on_link is not None:
                    on_link(link)
            ok, detail = is_working(last)
            cause = getattr(last.diagnosis, "cause", None)
            settled = settled + 1 if cause in SETTLED_CAUSES and last.connection == "open" else 0
            if settled >= SETTLED_CAUSES.get(str(cause), 0) > 0:
                why = f"{detail}: the fix did not change it and waiting will not"
                return VerifyResult(False, why, clock() - start, human, last, link_at is not None)
            # While a new link is awaited the bot is logged out by design: that is no move.
            moved = moved + 1 if (fixing and not wait_for_link and cause != fixing and cause in MOVED_CAUSES) else 0
            if moved >= MOVED_PROBES:
                why = f"the diagnosis moved from {fixing} to {cause}: {detail}"
                return VerifyResult(False, why, clock() - start, human, last, link_at is not None, moved_to=cause)
            if ok and link_at is not None and human == 0.0:
                human = clock() - link_at  # the person did their part: the link is open
            started = last.health.session_started_at
            if not ok:
                first_ok = None
            elif first_ok is None:
                first_ok, session = clock(), started
            elif started != session:
                # Open again, but on a new connection: it closed in between (a flap); the window restarts.
                flaps += 1
                first_ok, session = clock(), started
                detail = f"connection reopened within the open window ({flaps}x): flapping"
            elif clock() - first_ok >= settle_s:
                if round_trip is None:
                    return VerifyResult(True, detail, clock() - start, human, last, link_at is not None)
                left = max(1.0, min(15.0, deadline - clock()))
                rt_ok, rt_detail = round_trip(left)
                if rt_ok:
                    return VerifyResult(True, f"{detail}; {rt_detail}", clock() - start, human, last,
                                        link_at is not None)
                rt_last = rt_detail
                first_ok = None
        status(detail)
        if clock() >= deadline:
            if wait_for_link and link_at is not None and human == 0.0:
                human = clock() - link_at  # waited for a person who did not come
            why = f"not verified within {timeout_s:.0f}s: {detail}" + (f"; last {rt_last}" if rt_last else "")
            return VerifyResult(False, why, clock() - start, human, last, link_at is not None)
        sleep(min(interval_s, max(0.0, deadline - clock())))
