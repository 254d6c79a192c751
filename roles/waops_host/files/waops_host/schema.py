"""Facts v1 (contract 2) and health v1 (contract 5) as typed records: the one owner of both shapes.

The agent writes the facts document and the keep-alive agent the health file as JSON; the controller reads
them through these classes. `from_dict` never raises on a hostile or broken document: a field of the wrong
type reads as absent (None), so one bad host fails alone. `to_dict` gives the document back with the keys
it came with, in their order, unknown keys included (the JSON contract stays byte-compatible).
`parse_facts` is the gate the controller puts in front of all that, where a document arrives (SSH, a
file): a container the rules iterate over that has another type refuses the document with SchemaError
naming the field; after it, the controller reads only these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FACTS_SCHEMA = 1
HEALTH_SCHEMA = 1
CONNECTION_STATES = ("open", "connecting", "close", "waiting_link", "stopped")


class SchemaError(ValueError):
    """A facts document that does not have contract 2's shape; the message names the first bad field."""


# Field kinds. A scalar of the wrong type reads as absent (None): one odd value must not cost the rest.
# A container (`_obj`, `_seq`, a record) of the wrong type makes `parse_facts` refuse the document: the
# rules iterate over containers, and a host whose agent sends a string there fails alone, with a message.
def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if isinstance(v, int) else None


def _num(v: Any) -> int | float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _dict(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def _obj(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def _seq(v: Any) -> list[Any] | None:
    return v if isinstance(v, list) else None


_obj.strict = dict  # type: ignore[attr-defined]
_seq.strict = list  # type: ignore[attr-defined]
_NAME = {dict: "an object", list: "a list"}


def _rec(cls: Any) -> Any:
    def convert(v: Any) -> Any:
        return cls.from_dict(v) if isinstance(v, dict) else None

    convert.strict = dict  # type: ignore[attr-defined]
    convert.record = cls  # type: ignore[attr-defined]
    return convert


class _Record:
    """from_dict/to_dict for a dataclass whose fields are the document's keys (plus `extra`, `keys`)."""

    _kinds: dict[str, Any] = {}  # noqa: RUF012 (filled per subclass)

    @classmethod
    def from_dict(cls, doc: Any) -> Any:
        doc = doc if isinstance(doc, dict) else {}
        names = [f.name for f in fields(cls) if f.name not in ("extra", "keys")]  # type: ignore[arg-type]
        values = {n: cls._kinds.get(n, lambda v: v)(doc.get(n)) for n in names}
        # unknown keys, and a known key's value of the wrong type as it came (to_dict gives it back)
        extra = {k: v for k, v in doc.items() if k not in values or (values[k] is None and v is not None)}
        return cls(**values, extra=extra, keys=tuple(doc))

    @classmethod
    def problem(cls, doc: dict[str, Any], path: str) -> str | None:
        """The first container in `doc` whose type is not the one this record declares, or None."""
        for name, kind in cls._kinds.items():
            value, want = doc.get(name), getattr(kind, "strict", None)
            if value is None or want is None:
                continue
            if not isinstance(value, want):
                return f"{path}.{name} is {type(value).__name__}, expected {_NAME[want]}"
            sub = getattr(kind, "record", None)
            why = sub.problem(value, f"{path}.{name}") if sub is not None else None
            if why:
                return why
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        own = [f.name for f in fields(self) if f.name not in ("extra", "keys")]  # type: ignore[arg-type]
        order = self.keys or tuple(n for n in own if getattr(self, n) is not None)  # type: ignore[attr-defined]
        for k in order:
            if k in own:
                v = getattr(self, k)
                out[k] = v.to_dict() if isinstance(v, _Record) else self.extra.get(k) if v is None else v  # type: ignore[attr-defined]
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
    decrypt_failures: dict[str, Any] | None = None  # messages that failed to decrypt, within a window
    age_s: int | None = None  # added by the agent: seconds since updated_at (or the file's mtime)
    error: str | None = None  # the agent could not read the file: the only key then
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"schema": _int, "bot": _str, "connection": _str, "session_started_at": _str,  # noqa: RUF012
              "last_disconnect": _rec(LastDisconnect),
              "last_keepalive_at": _str, "last_message_sent_at": _str, "last_message_received_at": _str,
              "qr": _str, "pairing_code": _str, "library": _dict, "updated_at": _str, "linked_at": _str,
              "keepalive": _obj, "stopped_reason": _str, "logged_out_attempts": _int, "decrypt_failures": _obj,
              "age_s": _int,
              "error": _str}


@dataclass
class Process(_Record):
    """The bot's service: pm2's app or the systemd unit (`status` is the manager's own word)."""

    manager: str | None = None
    unit: str | None = None
    status: str | None = None
    sub_state: str | None = None  # systemd's SubState (`auto-restart` between two starts of a crash loop)
    restarts: int | None = None
    unstable_restarts: int | None = None
    uptime_s: int | float | None = None
    instances: int | None = None  # node processes on this bot's credentials (2+: a duplicate, 440)
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"manager": _str, "unit": _str, "status": _str, "sub_state": _str, "restarts": _int,  # noqa: RUF012
              "unstable_restarts": _int, "uptime_s": _num, "instances": _int, "pid": _int, "exit_code": _int,
              "error": _str}


@dataclass
class Creds(_Record):
    """A summary of the session's creds (never a key): present, parses, linked, which device."""

    present: bool | None = None
    parses: bool | None = None
    linked: bool | None = None
    me_id: str | None = None
    fingerprint: str | None = None
    mtime: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"present": _bool, "parses": _bool, "linked": _bool, "me_id": _str,  # noqa: RUF012
              "fingerprint": _str, "mtime": _str}


@dataclass
class AuthDb(_Record):
    """A database store's side of the auth facts (PostgreSQL or the SQLite file)."""

    reachable: bool | None = None
    error: str | None = None
    rows: int | None = None
    by_type: dict[str, Any] | None = None
    creds: Creds | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"reachable": _bool, "error": _str, "rows": _int, "by_type": _obj,  # noqa: RUF012
              "creds": _rec(Creds)}


@dataclass
class Auth(_Record):
    store: str | None = None
    file_count: int | None = None
    by_type: dict[str, Any] | None = None
    creds: Creds | None = None
    db: AuthDb | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"store": _str, "file_count": _int, "by_type": _obj, "creds": _rec(Creds),  # noqa: RUF012
              "db": _rec(AuthDb)}

    @property
    def in_database(self) -> bool:
        """Keys are rows (PostgreSQL or SQLite), not files."""
        return self.store in ("postgres", "sqlite")


@dataclass
class Backup(_Record):
    id: str | None = None
    created_at: str | None = None
    reason: str | None = None
    verified: bool | None = None
    age_s: int | None = None
    creds_linked: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"id": _str, "created_at": _str, "reason": _str, "verified": _bool, "age_s": _int,  # noqa: RUF012
              "creds_linked": _bool}


@dataclass
class Backups(_Record):
    count: int | None = None
    latest: Backup | None = None
    latest_verified: Backup | None = None
    latest_restorable: Backup | None = None  # what restore would take (docs/ARCHITECTURE.md)
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"count": _int, "latest": _rec(Backup), "latest_verified": _rec(Backup),  # noqa: RUF012
              "latest_restorable": _rec(Backup)}


@dataclass
class Library(_Record):
    package: str | None = None
    installed: str | None = None
    expected: str | None = None
    known_bad: bool | None = None
    release: str | None = None
    previous_release: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"package": _str, "installed": _str, "expected": _str, "known_bad": _bool,  # noqa: RUF012
              "release": _str, "previous_release": _str}


@dataclass
class Logs(_Record):
    """The log window: each stream's newest raw lines (`streams`) and each stream file's mtime (`mtimes`,
    what dates a stream whose lines carry no time); an older agent sent `matched`/`tail`."""

    source: str | None = None
    streams: dict[str, Any] | None = None
    mtimes: dict[str, Any] | None = None
    matched: list[Any] | None = None
    tail: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"source": _str, "streams": _obj, "mtimes": _obj, "matched": _seq, "tail": _seq}  # noqa: RUF012


@dataclass
class BotFacts(_Record):
    """One bot's facts. `node`, `disk`, `offhost` and `fence` stay plain objects (the rules read none)."""

    bot: str | None = None
    process: Process | None = None
    health: Health | None = None
    logs: Logs | None = None
    auth: Auth | None = None
    backups: Backups | None = None
    library: Library | None = None
    node: dict[str, Any] | None = None
    disk: dict[str, Any] | None = None
    offhost: dict[str, Any] | None = None
    fence: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    _kinds = {"bot": _str, "process": _rec(Process), "health": _rec(Health), "logs": _rec(Logs),  # noqa: RUF012
              "auth": _rec(Auth), "backups": _rec(Backups), "library": _rec(Library), "node": _obj,
              "disk": _obj, "offhost": _dict, "fence": _dict}


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


def shape_error(doc: dict[str, Any]) -> str | None:
    """Why `doc` (with a `bots` list) does not have contract 2's shape, or None. None stands for "absent";
    the shape is the records' own declaration above, so this gate and the types cannot drift apart."""
    for k, bot in enumerate(doc["bots"]):
        if not isinstance(bot, dict):
            return f"bots[{k}] is {type(bot).__name__}, expected an object"
        if not isinstance(bot.get("bot"), str) or not bot["bot"]:
            return f"bots[{k}].bot is not a bot name"
        why = BotFacts.problem(bot, f"bots[{k}]")
        if why:
            return why
    return None


def parse_facts(doc: Any) -> Facts:
    """The one gate between a facts document (JSON, from a host or a file) and the typed records:
    SchemaError with the first problem, never a KeyError or TypeError further in."""
    if not isinstance(doc, dict):
        raise SchemaError(f"a facts document is a JSON object, not {type(doc).__name__}")
    if doc.get("schema") != FACTS_SCHEMA:
        raise SchemaError(f"facts schema {doc.get('schema')!r}, this reader takes schema {FACTS_SCHEMA}")
    if not isinstance(doc.get("bots"), list):
        raise SchemaError("the facts document has no `bots` list")
    why = shape_error(doc)
    if why:
        raise SchemaError(why)
    return Facts.from_dict(doc)


def parse_bot(doc: Any, where: str = "bot") -> BotFacts:
    """One bot's entry on its own (a saved entry, the Ansible action's argument): the same checks."""
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: a bot's facts are a JSON object, not {type(doc).__name__}")
    why = BotFacts.problem(doc, where)
    if why:
        raise SchemaError(why)
    return BotFacts.from_dict(doc)
