"""The decision table: every cause, its first fix and its rollback chain."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from waops.model import CAUSES
from waops.plan import Plan, PlanOptions, make_plan

PLAYBOOKS = {
    "restart.yml", "reset_session.yml", "restore_session.yml", "prune_keys.yml",
    "rollback_release.yml", "pin_library.yml", "stop_duplicate.yml",
}  # fmt: skip


@dataclass
class Diag:  # any object with these attributes is a diagnosis for the planner
    cause: str
    code: int | None = None
    evidence: list[str] = field(default_factory=list)
    confidence: float = 0.9


def names(steps) -> list[str]:
    return [s.name for s in steps]


def chain(plan: Plan) -> list[list[str]]:
    return [names(stage) for stage in plan.rollback_chain]


# cause -> (first fix, rollback chain), straight from docs/ARCHITECTURE.md's table.
TABLE = {
    "process_down": (["restart", "verify"], [["rollback_release", "verify"], ["escalate"]]),
    "restart_required": (["restart", "verify"], [["rollback_release", "verify"], ["escalate"]]),
    "crash": (["rollback_release", "verify"], [["escalate"]]),
    "library_mismatch": (["rollback_release", "verify"], [["pin_library", "verify"], ["escalate"]]),
    "client_outdated": (["pin_library", "verify"], [["escalate"]]),
    "creds_lost": (["restore_session", "verify"], [["reset_session", "verify"], ["escalate"]]),
    "corrupt_keys": (
        ["prune_keys", "restart", "verify"],
        [["restore_session", "verify"], ["reset_session", "verify"], ["escalate"]],
    ),
    "logged_out": (["reset_session", "verify"], [["escalate"]]),
    "conflict": (["stop_duplicate", "verify"], [["prune_keys", "restart", "verify"], ["restore_session", "verify"],
                                                 ["reset_session", "verify"], ["escalate"]]),
    "network": (["restart", "verify"], [["escalate"]]),
    "file_bloat": (["prune_keys", "restart", "verify"], [["reset_session", "verify"], ["escalate"]]),
}


@pytest.mark.parametrize("cause", sorted(TABLE))
def test_fix_and_rollback_chain(cause: str) -> None:
    plan = make_plan(Diag(cause), "shop")
    first, fallbacks = TABLE[cause]
    assert plan.intent == "fix"
    assert names(plan.steps) == first
    assert chain(plan) == fallbacks
    for step in plan.all_steps():
        if step.kind == "playbook":
            assert step.playbook in PLAYBOOKS
            assert step.extra_vars["waops_bot"] == "shop"
        else:
            assert step.playbook is None


def test_every_cause_is_planned() -> None:
    assert set(TABLE) | {"healthy", "banned", "rate_limited", "unknown"} == set(CAUSES)


def test_healthy_is_an_empty_plan() -> None:
    plan = make_plan(Diag("healthy"), "shop")
    assert plan.empty and plan.intent == "nothing_to_do" and plan.rollback_chain == ()
    assert "nothing to do" in plan.why


@pytest.mark.parametrize(("cause", "code"), [("banned", 403), ("banned", 402), ("rate_limited", 429)])
def test_ban_and_rate_limit_change_nothing(cause: str, code: int) -> None:
    plan = make_plan(Diag(cause, code), "shop")
    assert plan.intent == "needs_human"
    assert names(plan.steps) == ["alert"] and plan.rollback_chain == ()
    assert not plan.destructive
    assert str(code) in plan.why


@pytest.mark.parametrize("cause", ["unknown", "something_new"])
def test_unknown_escalates(cause: str) -> None:
    plan = make_plan(Diag(cause, 500), "shop")
    assert plan.cause == "unknown" and plan.intent == "needs_human"
    assert names(plan.steps) == ["escalate"]


def test_destructive_steps_are_the_ones_that_touch_the_session() -> None:
    destructive = {"reset_session", "restore_session", "prune_keys"}
    for cause in CAUSES:
        for step in make_plan(Diag(cause), "shop").all_steps():
            assert step.destructive == (step.name in destructive), (cause, step.name)


def test_network_never_touches_the_session() -> None:
    plan = make_plan(Diag("network", 408), "shop")
    assert not plan.destructive
    assert plan.steps[0].extra_vars["waops_check_reachability"] is True


def test_logged_out_needs_a_person_to_link() -> None:
    plan = make_plan(Diag("logged_out", 401), "shop", PlanOptions(pairing="code", link_timeout_s=300))
    reset, wait = plan.steps
    assert reset.needs_human and reset.destructive and reset.extra_vars["waops_pairing"] == "code"
    assert wait.needs_human
    assert wait.extra_vars == {"waops_bot": "shop", "timeout_s": 300, "wait_for_link": True}
    assert "pairing code" in reset.description
    # no backup restore: a backup does not fix a 401
    assert "restore_session" not in names(plan.all_steps())


def test_process_down_needs_nobody() -> None:
    plan = make_plan(Diag("process_down"), "shop")
    assert not plan.needs_human and not plan.destructive


def test_options_reach_the_steps() -> None:
    plan = make_plan(Diag("client_outdated", 405), "shop", PlanOptions(known_good_version="6.7.18"))
    assert plan.steps[0].extra_vars == {"waops_bot": "shop", "waops_library_version": "6.7.18"}
    # no known-good version: the playbook decides, the var is left out rather than set to None
    assert "waops_library_version" not in make_plan(Diag("client_outdated"), "b").steps[0].extra_vars


def test_crash_without_previous_release_restarts() -> None:
    plan = make_plan(Diag("crash"), "shop", PlanOptions(has_previous_release=False))
    assert names(plan.steps) == ["restart", "verify"] and chain(plan) == [["escalate"]]


def test_library_mismatch_without_previous_release_pins() -> None:
    plan = make_plan(Diag("library_mismatch"), "shop", PlanOptions(has_previous_release=False,
                                                                    known_good_version="6.7.18"))
    assert names(plan.steps) == ["pin_library", "verify"] and chain(plan) == [["escalate"]]
    assert plan.steps[0].extra_vars["waops_library_version"] == "6.7.18"


def test_plan_is_json_serialisable() -> None:
    plan = make_plan(Diag("corrupt_keys", 500), "shop")
    doc = json.loads(json.dumps(plan.to_dict()))
    assert doc["cause"] == "corrupt_keys" and doc["code"] == 500
    assert doc["steps"][0]["playbook"] == "prune_keys.yml"
    assert doc["steps"][0]["extra_vars"]["waops_prune"] == "broken_sessions"
    assert [s["name"] for s in doc["rollback_chain"][0]] == ["restore_session", "verify"]


def test_planner_does_not_import_the_diagnosis_module() -> None:
    source = (Path(__file__).parents[2] / "controller" / "waops" / "plan.py").read_text()
    assert "from waops.diagnose" not in source and "import waops.diagnose" not in source


def test_a_few_decryption_errors_are_reported_not_acted_on() -> None:
    """The diagnosis names corrupt_keys with low confidence; only a flood (high confidence) prunes."""
    from waops.diagnose import diagnose_log
    from waops.logparse import parse_text

    few = diagnose_log(parse_text("Failed to decrypt message with any known session...\n"
                                  "Session error:Error: Bad MAC Error: Bad MAC\n" * 2))
    assert few.cause == "corrupt_keys"
    plan = make_plan(few, "shop")
    assert plan.intent == "needs_human" and names(plan.steps) == ["alert"] and not plan.destructive
    assert "decryption errors" in plan.why
    flood = diagnose_log(parse_text("Session error:Error: Bad MAC Error: Bad MAC\n" * 30))
    assert flood.cause == "corrupt_keys" and flood.confidence >= PlanOptions().corrupt_keys_min_confidence
    assert make_plan(flood, "shop").steps[0].name == "prune_keys"


def test_default_policy_follows_the_first_fix() -> None:
    """auto for the fixes nobody takes part in, even when a relink ends their chain; ask for the reset;
    never when only a person can act."""
    from waops.plan import default_policy

    want = {"process_down": "auto", "restart_required": "auto", "crash": "auto", "library_mismatch": "auto",
            "client_outdated": "auto", "creds_lost": "auto", "corrupt_keys": "auto", "conflict": "auto",
            "file_bloat": "auto", "network": "auto", "logged_out": "ask", "banned": "never",
            "rate_limited": "never", "unknown": "never", "healthy": "never"}
    assert {cause: default_policy(make_plan(Diag(cause), "shop")) for cause in want} == want
