"""One linked device on two hosts: the agent's fingerprint (no secret in it), naming every copy, and the
plan that stops the copy which is not the bot's home."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_recover import Clock, Host, RecordingUI, healthy

from waops.diagnose import Diagnosis
from waops.duplicates import Copy, annotate, same_device
from waops.incidents import IncidentStore, connect
from waops.plan import PlanOptions, make_plan
from waops.probe import BotReport, HostReport
from waops.recover import Deps, RecoverOptions, Recovery, Target
from waops.verify import BotState, wait_verified
from waops_host import keys

CREDS = {"me": {"id": "15550100001:7@s.whatsapp.net"}, "account": {"details": "x"},
         "signedIdentityKey": {"private": {"type": "Buffer", "data": "PRIVATE-SECRET-b64"},
                               "public": {"type": "Buffer", "data": "BQpublic-b64"}},
         "noiseKey": {"private": {"type": "Buffer", "data": "NOISE-SECRET"}}}


def test_fingerprint_is_the_device_and_holds_no_secret() -> None:
    fp = keys.device_fingerprint(CREDS)
    want = hashlib.sha256(b"15550100001:7@s.whatsapp.net\0BQpublic-b64").hexdigest()[:16]
    assert fp == want
    summary = keys.creds_summary(CREDS)
    assert summary["fingerprint"] == fp
    assert "SECRET" not in json.dumps(summary)
    other = json.loads(json.dumps(CREDS))
    other["me"]["id"] = "15550100001:8@s.whatsapp.net"  # another device of the same phone
    assert keys.device_fingerprint(other) != fp
    assert keys.device_fingerprint({"me": {}}) is None and keys.device_fingerprint("x") is None


def bot_facts(fp: str | None, status: str = "online") -> dict[str, Any]:
    return {"process": {"status": status}, "auth": {"creds": {"fingerprint": fp}}}


def report(host: str, bot: str, fp: str | None, cause: str = "healthy", status: str = "online") -> HostReport:
    return HostReport(host, bots=[BotReport(bot, Diagnosis(cause, None, ["x"], 0.9), bot_facts(fp, status))])


def test_diagnose_names_every_host_that_runs_the_same_device() -> None:
    reports = [report("bot-1", "shop", "aa", "conflict"), report("bot-2", "shop", "aa", "healthy"),
               report("bot-3", "crm", "bb"), report("bot-4", "shop", "aa", "healthy", status="stopped")]
    assert same_device(reports) == {"aa": [Copy("bot-1", "shop"), Copy("bot-2", "shop")]}
    annotate(reports)
    one, two, three = (r.bots[0].diagnosis for r in reports[:3])
    assert one.cause == two.cause == "conflict" and three.cause == "healthy"
    assert "also runs on bot-2/shop" in one.evidence[0] and "also runs on bot-1/shop" in two.evidence[0]
    assert reports[3].bots[0].diagnosis.cause == "healthy"  # a stopped copy runs no socket


def test_plan_stops_the_copy_that_is_not_home() -> None:
    plan = make_plan(Diagnosis("conflict", 440, [], 0.9), "shop",
                     PlanOptions(copy_hosts=("bot-2",), home_host="bot-1", host="bot-1"))
    step = plan.steps[0]
    assert step.name == "stop_duplicate" and step.extra_vars["waops_copy_hosts"] == ["bot-2"]


@pytest.mark.parametrize(("home", "text"), [(None, "names no other home"), ("bot-2", "the bot's home is bot-2")])
def test_without_a_home_or_away_from_it_a_person_decides(home: str | None, text: str) -> None:
    plan = make_plan(Diagnosis("conflict", 440, [], 0.9), "shop",
                     PlanOptions(copy_hosts=("bot-2",), home_host=home, host="bot-1"))
    assert plan.intent == "needs_human" and text in plan.why and "bot-1, bot-2" in plan.why


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with connect(tmp_path / "incidents.db") as s:
        yield s


def test_recover_finds_the_copy_on_another_host_and_stops_it_there(store: IncidentStore) -> None:
    looks_ok = healthy()
    looks_ok = BotState(looks_ok.diagnosis, {**looks_ok.facts.to_dict(), **bot_facts("aa")})  # a flap, open
    host = Host([looks_ok, healthy()])
    asked: list[str] = []

    def copies(fp: str) -> list[Copy]:
        asked.append(fp)
        return [Copy("bot-1", "shop"), Copy("bot-2", "shop")]

    fast = functools.partial(wait_verified, interval_s=0, settle_s=0, sleep=lambda _s: None)
    deps = Deps(probe=host.probe, run_step=host.run_step, store=store, now=Clock().now, verify=fast, copies=copies)
    r = Recovery(Target("bot-1", "shop", home_host="bot-1"), RecoverOptions(yes=True), deps, RecordingUI()).run()
    assert asked == ["aa"] and r.cause == "conflict"
    assert host.ran[0] == ("stop_duplicate.yml", {"waops_bot": "shop", "waops_copy_hosts": ["bot-2"]})
    assert r.outcome == "resolved"
