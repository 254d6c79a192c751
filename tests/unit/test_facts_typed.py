"""Facts arrive once, at the boundary (waops.facts.parse for SSH, the Ansible action for its argument),
and are typed records after it. A malformed document is refused there with the field that is wrong; no
input, however odd, reaches a rule as a KeyError or TypeError."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from waops.diagnose import Diagnosis, diagnose
from waops.facts import FactsError, parse
from waops.model import BotFacts, Creds, Health, LinkRequest, Process, SchemaError, bot_facts, parse_bot, parse_facts
from waops.verify import BotState

ENTRY: dict[str, Any] = {
    "bot": "shop",
    "process": {"manager": "pm2", "status": "online", "restarts": 2, "unstable_restarts": 0, "uptime_s": 120,
                "instances": 1, "pid": 99, "exit_code": None},
    "health": {"schema": 1, "bot": "shop", "connection": "close", "age_s": 4, "updated_at": "2026-11-22T07:00:00Z",
               "last_disconnect": {"code": 401, "reason": "device_removed", "at": "2026-11-22T06:59:00Z"}},
    "logs": {"source": "pm2", "window_bytes": 65536, "streams": {"out": [], "err": []}},
    "auth": {"store": "files", "file_count": 40, "by_type": {"pre-key": 30},
             "creds": {"present": True, "parses": True, "linked": True, "fingerprint": "ab" * 8}, "db": None},
    "backups": {"count": 1, "latest": {"id": "b1", "verified": True, "age_s": 60, "creds_linked": True}},
    "library": {"package": "baileys", "installed": "6.7.18", "expected": "6.7.18", "known_bad": False},
    "node": {"version": "v20.20.2"}, "disk": {"free_pct": 40.0},
}
DOC = {"schema": 1, "host": "bot-1", "collected_at": "2026-11-22T07:00:04Z", "agent_version": "1", "bots": [ENTRY]}


def _wire(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_the_boundary_gives_typed_records_that_round_trip() -> None:
    facts = parse(_wire(DOC), b"", 0, "bot-1")
    bot = facts.bots[0]
    assert isinstance(bot.process, Process) and bot.process.status == "online" and bot.process.instances == 1
    assert isinstance(bot.health, Health) and bot.health.last_disconnect is not None
    assert bot.health.last_disconnect.code == 401
    assert isinstance(bot.auth.creds, Creds) and bot.auth.creds.fingerprint == "ab" * 8
    assert bot.backups.latest.id == "b1" and bot.library.installed == "6.7.18"
    assert json.dumps(facts.to_dict()) == json.dumps(DOC)  # the JSON output stays the agent's document
    assert diagnose(bot).cause == "logged_out"


@pytest.mark.parametrize("doc, why", [
    ({"schema": 2, "bots": []}, "facts schema 2"),
    ({"schema": 1}, "no facts from waops-host"),
    ([1, 2], "no facts from waops-host"),
    ({"schema": 1, "bots": [{"bot": ""}]}, "bots[0].bot is not a bot name"),
    ({"schema": 1, "bots": [{**ENTRY, "auth": {"store": "files", "creds": ["present"]}}]},
     "bots[0].auth.creds is list, expected an object"),
    ({"schema": 1, "bots": [{**ENTRY, "backups": {"latest_restorable": "b1"}}]},
     "bots[0].backups.latest_restorable is str, expected an object"),
    ({"schema": 1, "bots": [{**ENTRY, "library": "6.7.18"}]}, "bots[0].library is str, expected an object"),
    ({"schema": 1, "bots": [{**ENTRY, "logs": {"matched": {"text": "x"}}}]},
     "bots[0].logs.matched is dict, expected a list"),
])
def test_a_malformed_document_is_refused_at_the_boundary_naming_the_field(doc: Any, why: str) -> None:
    with pytest.raises(FactsError) as err:
        parse(_wire(doc), b"", 0, "bot-1")
    assert why in str(err.value) and str(err.value).startswith("bot-1: ")


def test_parse_facts_and_parse_bot_raise_schema_error_not_key_or_type_errors() -> None:
    for bad in (None, "facts", 7, [], {"bots": []}, {"schema": 1, "bots": "shop"}, {"schema": 1, "bots": [3]}):
        with pytest.raises(SchemaError):
            parse_facts(bad)
    with pytest.raises(SchemaError, match=r"bots\[2\]\.health\.keepalive is str"):
        parse_bot({"bot": "shop", "health": {"keepalive": "12h"}}, "bots[2]")
    with pytest.raises(SchemaError, match="not list"):
        parse_bot([ENTRY])


def test_a_scalar_of_the_wrong_type_reads_as_absent_and_survives_the_round_trip() -> None:
    entry = copy.deepcopy(ENTRY)
    entry["process"]["instances"] = {"error": "ps failed"}  # what the agent sends when counting fails
    entry["health"]["age_s"] = "4"
    entry["library"]["known_bad"] = "no"
    bot = parse_facts({"schema": 1, "bots": [entry]}).bots[0]
    assert (bot.process.instances, bot.health.age_s, bot.library.known_bad) == (None, None, None)
    assert bot.to_dict() == entry
    assert diagnose(bot).cause in ("logged_out", "unknown", "restart_required")


def _mutations(rng: random.Random, doc: Any, depth: int = 0) -> Any:
    """`doc` with values swapped for odd ones of other types, at random places."""
    odd = [None, 0, -1, 1.5, True, "", "x", [], [1], {}, {"a": 1}, "2026-13-45T99:00:00Z", 10**20]
    if isinstance(doc, dict):
        return {k: (rng.choice(odd) if rng.random() < 0.2 else _mutations(rng, v, depth + 1)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mutations(rng, v, depth + 1) for v in doc]
    return doc


def test_no_odd_document_crashes_the_boundary_or_the_rules() -> None:
    rng = random.Random(12)
    refused = typed = 0
    for _ in range(400):
        doc = _mutations(rng, DOC)
        try:
            facts = parse(_wire(doc), b"", 0, "bot-1")
        except FactsError:
            refused += 1
            continue
        typed += 1
        for bot in facts.bots:
            d = diagnose(bot)
            assert isinstance(d, Diagnosis)
            state = BotState(d, bot)
            assert isinstance(state.link("bot-1"), LinkRequest)
            assert state.connection is None or isinstance(state.connection, str)
        # a plain entry (a test, a saved file) is read tolerantly and never raises either
        for entry in doc.get("bots") or []:
            assert isinstance(diagnose(entry if isinstance(entry, dict) else {}), Diagnosis)
    assert refused and typed  # both paths were taken


def test_a_plain_entry_is_typed_once_where_it_enters() -> None:
    bot = bot_facts(ENTRY)
    assert isinstance(bot, BotFacts) and bot_facts(bot) is bot
    state = BotState(None, ENTRY)
    assert isinstance(state.facts, BotFacts) and state.health.connection == "close"
    assert state.link("h").to_dict() == {"bot": "shop", "host": "h", "has_qr": False, "pairing_code": None,
                                         "connection": "close"}
