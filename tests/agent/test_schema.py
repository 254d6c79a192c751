"""waops_host.schema: facts v1 and health v1 as typed records, read tolerantly and given back unchanged."""

from __future__ import annotations

import json

from agent_helpers import Bot

from waops_host.schema import (
    FACTS_SCHEMA,
    BotFacts,
    Facts,
    Health,
    LastDisconnect,
    Process,
    shape_error,
)

HEALTH = {"schema": 1, "bot": "shop", "connection": "open",
          "last_disconnect": {"code": 401, "reason": "device_removed", "at": "2026-11-22T07:00:00Z"},
          "session_started_at": "2026-11-22T07:01:00Z", "last_keepalive_at": None, "qr": None,
          "library": {"name": "baileys", "version": "6.7.18"}, "updated_at": "2026-11-22T07:02:00Z",
          "keepalive": {"interval_hours": 12, "count": 3}, "logged_out_attempts": 0, "future_key": [1, 2],
          "age_s": 12}


def test_a_real_facts_document_round_trips_byte_for_byte(bot: Bot) -> None:
    (bot.auth.parent / "health.json").write_text(json.dumps(HEALTH))
    doc = bot.json("facts")
    facts = Facts.from_dict(doc)
    assert facts.schema == FACTS_SCHEMA and facts.bots[0].bot == "shop" and facts.bots[0].health is not None
    assert facts.bots[0].health.connection == "open" and isinstance(facts.bots[0].process, Process)
    assert json.dumps(facts.to_dict()) == json.dumps(doc)
    assert shape_error(doc) is None


def test_health_fields_are_typed_and_unknown_keys_survive() -> None:
    h = Health.from_dict(HEALTH)
    assert h.last_disconnect is not None and h.last_disconnect.code == 401 and h.session_started_at.endswith("Z")
    assert h.extra == {"future_key": [1, 2]} and h.to_dict() == HEALTH
    assert list(h.to_dict()) == list(HEALTH)


def test_a_hostile_document_reads_as_absent_fields_not_a_crash() -> None:
    h = Health.from_dict({"connection": ["open"], "last_disconnect": "401", "logged_out_attempts": True,
                          "age_s": "12"})
    assert (h.connection, h.last_disconnect, h.logged_out_attempts, h.age_s) == (None, None, None, None)
    assert Health.from_dict(None).connection is None and Health.from_dict("x").to_dict() == {}
    b = BotFacts.from_dict({"bot": "shop", "health": [], "process": "online"})
    assert b.health is None and b.process is None
    assert Facts.from_dict({"bots": "nope"}).bots == []
    assert shape_error({"bots": [{"bot": "shop", "health": []}]}) == "bots[0].health is list, expected an object"


def test_records_built_in_code_give_their_set_fields_in_declared_order() -> None:
    h = Health(connection="close", last_disconnect=LastDisconnect(code=428))
    assert h.to_dict() == {"connection": "close", "last_disconnect": {"code": 428}}
