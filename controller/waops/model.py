"""The controller's contract vocabulary in one place: the causes a diagnosis may name, the outcomes an
incident may end with, the record of one step, the link request a person answers, and the typed facts
(contract 2) and health (contract 5), whose owner is the agent's schema module, re-exported here so the
controller names every contract type from one module. Rules, the planner, the store, verify, recover and
the CLI import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from waops_host.schema import (
    Auth,
    Backup,
    Backups,
    BotFacts,
    Creds,
    Facts,
    Health,
    LastDisconnect,
    Library,
    Logs,
    Process,
    SchemaError,
    parse_bot,
    parse_facts,
)

__all__ = [
    "CAUSES", "OUTCOMES", "Auth", "Backup", "Backups", "BotFacts", "Cause", "Creds", "Facts", "Health",
    "LastDisconnect", "Library", "LinkRequest", "Logs", "Outcome", "Process", "SchemaError", "StepRecord",
    "bot_facts", "parse_bot", "parse_facts",
]  # fmt: skip

Cause = Literal[
    "healthy", "process_down", "crash", "library_mismatch", "client_outdated", "logged_out",
    "creds_lost", "corrupt_keys", "conflict", "network", "restart_required", "rate_limited",
    "banned", "file_bloat", "unknown",
]  # fmt: skip
CAUSES: tuple[str, ...] = get_args(Cause)

Outcome = Literal["resolved", "rolled_back", "needs_human", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


def bot_facts(value: BotFacts | Mapping[str, Any] | None) -> BotFacts:
    """Typed facts of one bot from what a caller holds: the record itself, or a bot's JSON entry that did
    not come through `parse_facts` (tests, a saved entry), read tolerantly (wrong types read as absent)."""
    if isinstance(value, BotFacts):
        return value
    return BotFacts.from_dict(dict(value) if isinstance(value, Mapping) else None)


@dataclass
class StepRecord:
    """One step of a repair: what ran, when, how it ended. During a run it also carries the step's kind,
    its stage (0 = the first fix, 1.. = the rollback chain, -1 = outside the plan) and data for the
    summary; the incident store keeps name, times, result and detail (contract 6)."""

    name: str
    started_at: datetime
    ended_at: datetime | None
    result: str  # ok, failed, cancelled, needs_human
    detail: str = ""
    kind: str = ""
    stage: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.kind:
            out.update(kind=self.kind, stage=self.stage)
        out.update(started_at=_iso(self.started_at), ended_at=_iso(self.ended_at), result=self.result,
                   detail=self.detail)
        if self.kind:
            out["data"] = self.data
        return out


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass(frozen=True)
class LinkRequest:
    """What a person needs to link the bot: a QR string to scan or a code to type (or neither yet)."""

    bot: str
    host: str
    qr: str | None = None
    pairing_code: str | None = None
    connection: str | None = None

    @property
    def pending(self) -> bool:
        return bool(self.qr or self.pairing_code)

    @classmethod
    def from_health(cls, health: Health | None, *, bot: str = "", host: str = "") -> LinkRequest:
        h = health or Health()
        return cls(bot=h.bot or bot, host=host, qr=h.qr or None, pairing_code=h.pairing_code or None,
                   connection=h.connection or None)

    def to_dict(self) -> dict[str, Any]:
        # The QR string itself is left out of machine output on purpose: the image file carries it.
        return {"bot": self.bot, "host": self.host, "has_qr": bool(self.qr), "pairing_code": self.pairing_code,
                "connection": self.connection}  # fmt: skip
