"""Facts v1 (contract 2) and health v1 (contract 5) as typed records: the one owner of both shapes.

The agent writes the facts document and the keep-alive agent the health file as JSON; the controller reads
them through these classes. `from_dict` never raises on a hostile or broken document: a field of the wrong
type reads as absent (None), so one bad host fails alone. `to_dict` gives the document back with the keys
it came with, in their order, unknown keys included (the JSON contract stays byte-compatible).
`shape_error` is the gate the controller puts in front of all that: the containers the rules iterate over.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FACTS_SCHEMA = 1
HEALTH_SCHEMA = 1
CONNECTION_STATES = ("open", "connecting", "close", "waiting_link", "stopped")


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _dict(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


class _Record:
    """from_dict/to_dict for a dataclass whose fields are the document's keys (plus `extra`, `keys`)."""

    _kinds: dict[str, Any] = {}  # noqa: RUF012 (filled per subclass)

    @classmethod
    def from_dict(cls, doc: Any) -> Any:
        doc = doc if isinstance(doc, dict) else {}
        names = [f.name for f in fields(cls) if f.name not in ("extra", "keys")]  # type: ignore[arg-type]
        values = {n: cls._kinds.get(n, lambda v: v)(doc.get(n)) for n in names}
        extra = {k: v for k, v in doc.items() if k not in names}
        return cls(**values, extra=extra, keys=tuple(doc))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        own = [f.name for f in fields(self) if f.name not in ("extra", "keys")]  # type: ignore[arg-type]
        order = self.keys or tuple(n for n in own if getattr(self, n) is not None)  # type: ignore[attr-defined]
        for k in order:
            if k in own:
                v = getattr(self, k)
                out[k] = v.to_dict() if isinstance(v, _Record) else v
            elif k in self.extra:  # type: ignore[attr-defined]
                out[k] = self.extra[k]  # type: ignore[attr-defined]
        return out


@dataclass
class LastDisconnect(_Record):
    code: int | None = None
    reason: str | None = None
    at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"code": _int, "reason": _str, "at": _str}  # noqa: RUF012


@dataclass
class Health(_Record):
    """The bot's health file (contract 5) as the facts carry it (plus `age_s`, or only `error`)."""

    schema: int | None = None
    bot: str | None = None
    connection: str | None = None
    last_disconnect: LastDisconnect | None = None
    session_started_at: str | None = None
    last_keepalive_at: str | None = None
    last_message_sent_at: str | None = None
    last_message_received_at: str | None = None
    qr: str | None = None
    pairing_code: str | None = None
    library: dict[str, Any] | None = None
    updated_at: str | None = None
    linked_at: str | None = None
    keepalive: dict[str, Any] | None = None
    stopped_reason: str | None = None
    logged_out_attempts: int | None = None
    age_s: int | None = None  # added by the agent: seconds since updated_at (or the file's mtime)
    error: str | None = None  # the agent could not read the file: the only key then
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"schema": _int, "bot": _str, "connection": _str, "session_started_at": _str,  # noqa: RUF012
              "last_disconnect": lambda v: LastDisconnect.from_dict(v) if isinstance(v, dict) else None,
              "last_keepalive_at": _str, "last_message_sent_at": _str, "last_message_received_at": _str,
              "qr": _str, "pairing_code": _str, "library": _dict, "updated_at": _str, "linked_at": _str,
              "keepalive": _dict, "stopped_reason": _str, "logged_out_attempts": _int, "age_s": _int,
              "error": _str}


@dataclass
class BotFacts(_Record):
    """One bot's facts. The parts other than health stay plain objects; shape_error vouches for their type."""

    bot: str | None = None
    process: dict[str, Any] | None = None
    health: Health | None = None
    logs: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    backups: dict[str, Any] | None = None
    library: dict[str, Any] | None = None
    node: dict[str, Any] | None = None
    disk: dict[str, Any] | None = None
    offhost: dict[str, Any] | None = None
    fence: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"bot": _str, "process": _dict, "logs": _dict, "auth": _dict, "backups": _dict,  # noqa: RUF012
              "health": lambda v: Health.from_dict(v) if isinstance(v, dict) else None,
              "library": _dict, "node": _dict, "disk": _dict, "offhost": _dict, "fence": _dict}


@dataclass
class Facts(_Record):
    """The whole facts document of one host (contract 2)."""

    schema: int | None = None
    host: str | None = None
    collected_at: str | None = None
    agent_version: str | None = None
    bots: list[BotFacts] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"schema": _int, "host": _str, "collected_at": _str, "agent_version": _str,  # noqa: RUF012
              "bots": lambda v: [BotFacts.from_dict(b) for b in v if isinstance(b, dict)] if isinstance(v, list)
              else []}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if "bots" in out:
            out["bots"] = [b.to_dict() for b in self.bots]
        return out


# Contract 2's containers and their types: checked once by the controller, so that the rules can trust
# `.get()` and iteration, and one host with a broken or hostile agent fails alone instead of aborting the fleet.
_BOT_SHAPE: dict[str, type] = {"process": dict, "health": dict, "logs": dict, "auth": dict, "backups": dict,
                               "library": dict, "node": dict, "disk": dict}
_NESTED: dict[tuple[str, str], type] = {
    ("logs", "matched"): list, ("logs", "tail"): list, ("auth", "creds"): dict, ("auth", "db"): dict,
    ("auth", "by_type"): dict, ("backups", "latest"): dict, ("backups", "latest_restorable"): dict,
    ("health", "last_disconnect"): dict, ("health", "keepalive"): dict,
}
_NAME = {dict: "an object", list: "a list"}


def shape_error(doc: dict[str, Any]) -> str | None:
    """Why `doc` (with a `bots` list) does not have contract 2's shape, or None. None stands for "absent"."""
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
