"""One linked device on several hosts: the facts carry a fingerprint of the device the creds belong to
(`auth.creds.fingerprint`, no secret in it); bots whose process runs with the same fingerprint are one
device run twice, which WhatsApp answers with 440 every few seconds. Pure functions over probe reports,
used by `diagnose` (to name every host) and `recover` (to stop the copy that is not the bot's home)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from waops.model import BotFacts, bot_facts

RUNNING = {"online", "active", "launching", "activating", "waiting restart"}
# What a probe of a flapping copy may show instead of the conflict it is part of.
MASKED_CAUSES = frozenset({"healthy", "unknown", "conflict", "corrupt_keys", "restart_required", "network"})


@dataclass(frozen=True)
class Copy:
    host: str
    bot: str

    def __str__(self) -> str:
        return f"{self.host}/{self.bot}"


def fingerprint(facts: BotFacts | Mapping[str, Any] | None) -> str | None:
    auth = bot_facts(facts).auth
    creds = auth.creds if auth is not None else None
    return creds.fingerprint if creds is not None and creds.fingerprint else None


def running(facts: BotFacts | Mapping[str, Any] | None) -> bool:
    proc = bot_facts(facts).process
    return proc is not None and (proc.status or "") in RUNNING


def same_device(reports: Sequence[Any]) -> dict[str, list[Copy]]:
    """fingerprint -> every running copy, for the devices that run more than once."""
    seen: dict[str, list[Copy]] = {}
    for r in reports:
        for b in getattr(r, "bots", ()):
            fp = fingerprint(b.facts)
            if fp and running(b.facts):
                seen.setdefault(fp, []).append(Copy(r.host, b.bot))
    return {fp: copies for fp, copies in seen.items() if len(copies) > 1}


def annotate(reports: Sequence[Any]) -> None:
    """Name every host that runs the same device, on each of them; that is a conflict whatever the moment
    of the probe showed (a flapping copy looks open half of the time)."""
    groups = same_device(reports)
    for r in reports:
        for b in getattr(r, "bots", ()):
            copies = groups.get(fingerprint(b.facts) or "")
            if not copies or not running(b.facts):
                continue
            mark(b.diagnosis, [c for c in copies if c != Copy(r.host, b.bot)], fingerprint(b.facts))


def mark(d: Any, others: Sequence[Copy], fp: str | None) -> None:
    """The diagnosis of one copy: name the others; a cause the flapping can show turns into conflict."""
    d.evidence.insert(0, f"the same linked device (fingerprint {fp}) also runs on {', '.join(map(str, others))}")
    if d.cause in MASKED_CAUSES:
        d.cause, d.code, d.rule = "conflict", 440, "same_device"
