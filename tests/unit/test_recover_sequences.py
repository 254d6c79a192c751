"""Recovery when the diagnosis changes under the fix (a conflict that left damaged keys), a duplicate
that keeps flapping, and Ctrl-C with what was done recorded. Scripted facts and playbook results, the
real planner, verify and SQLite store (the same harness as test_recover)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_recover import Host, RecordingUI, broken, healthy, ok, run
from tests.unit.test_recover_verify import FakeTime, state, verify, verify_result

from waops.diagnose import Diagnosis
from waops.execute import Cancel, RunResult
from waops.incidents import IncidentStore, connect
from waops.plan import PlanOptions, make_plan
from waops.recover import RecoverOptions
from waops.verify import BotState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with connect(tmp_path / "incidents.db") as s:
        yield s


def keys_broken() -> BotState:
    return BotState(Diagnosis("corrupt_keys", 500, ["Bad MAC flood"], 0.85),
                    {"bot": "shop", "health": {"connection": "open", "age_s": 3, "session_started_at": "s1"}})


# --- verify ---------------------------------------------------------------------------------------

def test_verify_stops_when_the_diagnosis_moves_to_another_cause_with_its_own_fix() -> None:
    r = verify([keys_broken()], timeout=120, fixing="conflict")
    assert not r.ok and r.moved_to == "corrupt_keys"
    assert r.elapsed_s < 10 and "moved from conflict to corrupt_keys" in r.detail


def test_verify_keeps_waiting_for_the_cause_it_fixes_and_for_a_link() -> None:
    assert verify([keys_broken()], timeout=30, fixing="corrupt_keys").moved_to is None
    waiting = state("logged_out", "waiting_link", qr="2@x")
    assert verify([waiting], timeout=30, fixing="corrupt_keys", wait_for_link=True).moved_to is None


def test_an_open_that_is_a_new_connection_each_time_is_a_flap_not_resolved() -> None:
    # Probed only while open: each probe lands on a new connection (the copy elsewhere kicks it with 440).
    seq = [state("healthy", "open", session_started_at=f"t{i}") for i in range(200)]
    r = verify(seq, timeout=40)
    assert not r.ok and "flapping" in r.detail


def test_one_connection_open_for_the_whole_window_is_verified() -> None:
    ft = FakeTime()
    r = verify_result(lambda: state("healthy", "open", session_started_at="t1"), ft, 40)
    assert r.ok


def test_default_open_window_is_longer_than_a_flapping_cycle() -> None:
    from waops.verify import OPEN_WINDOW_S

    ft = FakeTime()
    from waops.verify import wait_verified

    r = wait_verified(lambda: state("healthy", "open", session_started_at="t1"), timeout_s=60, clock=ft.clock,
                      sleep=ft.sleep, interval_s=1)
    assert r.ok and r.elapsed_s >= OPEN_WINDOW_S >= 6  # the simulator's copies kick each other every ~3 s


# --- the conflict chain ---------------------------------------------------------------------------

def test_conflict_plan_restores_from_before_the_duplicate_started() -> None:
    plan = make_plan(Diagnosis("conflict", 440, [], 0.9), "shop", PlanOptions(started_at="2026-11-22T02:50:00Z"))
    restore = plan.rollback_chain[1][0]
    assert restore.name == "restore_session"
    assert restore.extra_vars["waops_backup_before"] == "2026-11-22T02:50:00Z"
    assert plan.stop_when_unchanged


def test_conflict_that_left_broken_keys_is_resolved_not_escalated(store: IncidentStore) -> None:
    # stop_duplicate works, then the Bad MAC flood of the two writers shows; prune and restart fix it.
    host = Host([broken("conflict", 440), keys_broken(), keys_broken(), keys_broken(), healthy()])
    r = run(host, store)
    assert r.outcome == "rolled_back", r.why
    assert [p for p, _ in host.ran] == ["stop_duplicate.yml", "prune_keys.yml", "restart.yml"]
    verify1 = next(s for s in r.steps if s.name == "verify")
    assert verify1.data["moved_to"] == "corrupt_keys"
    inc = store.get(r.incident_id)
    assert inc is not None and inc.outcome == "rolled_back" and inc.mttr_s is not None


def test_a_conflict_that_persists_never_reaches_the_destructive_fallbacks(store: IncidentStore) -> None:
    host = Host([broken("conflict", 440)])
    r = run(host, store, opts=RecoverOptions(yes=True, verify_timeout_s=1))
    assert r.outcome == "needs_human" and "conflict persists" in r.why
    assert [p for p, _ in host.ran] == ["stop_duplicate.yml"]


def test_a_stop_duplicate_that_failed_never_reaches_the_destructive_fallbacks(store: IncidentStore) -> None:
    from tests.unit.test_recover import failed

    host = Host([broken("conflict", 440)], {"stop_duplicate.yml": [failed("stop_duplicate.yml", "bot-2 unreachable")]})
    r = run(host, store)
    assert r.outcome == "needs_human" and "conflict persists" in r.why
    assert [p for p, _ in host.ran] == ["stop_duplicate.yml"]


# --- Ctrl-C ---------------------------------------------------------------------------------------

def test_a_cancel_after_the_reset_records_what_it_did(store: IncidentStore) -> None:
    cancel = Cancel()
    reset = RunResult("reset_session.yml", "canceled", 254, done=[{
        "task": "Reset the session", "status": "changed", "rc": 0,
        "report": {"results": [{"ok": True, "pre_reset_backup": "20261122T030000Z-pre-reset", "files_removed": 12,
                                "rows_deleted": None}]}}])

    class CancellingHost(Host):
        def run_step(self, target, step, extravars, on_progress, c, timeout_s):  # type: ignore[no-untyped-def]
            if step.playbook == "reset_session.yml":
                cancel.set()  # Ctrl-C while the reset ran: it finished, the play stopped at the next gate
            return super().run_step(target, step, extravars, on_progress, c, timeout_s)

    host = CancellingHost([broken("logged_out", 401)], {"reset_session.yml": [reset]})
    r = run(host, store, cancel=cancel, ui=RecordingUI())
    assert r.cancelled and r.outcome == "failed" and r.exit_code == 130
    assert "keys deleted (12 files)" in r.why and "20261122T030000Z-pre-reset" in r.why
    inc = store.get(r.incident_id)
    assert inc is not None
    step = next(s for s in inc.steps if s.name == "reset_session")
    assert step.result == "cancelled" and "pre-reset backup 20261122T030000Z-pre-reset holds them" in step.detail
    assert [p for p, _ in host.ran] == ["reset_session.yml", "restart.yml"]  # the bot runs again


def test_a_cancel_before_any_destructive_step_says_so(store: IncidentStore) -> None:
    cancel = Cancel()
    host = Host([broken("logged_out", 401)], {"reset_session.yml": [RunResult("reset_session.yml", "canceled", 254)]})
    orig = host.run_step

    def run_step(*a, **k):  # type: ignore[no-untyped-def]
        cancel.set()
        return orig(*a, **k)

    host.run_step = run_step  # type: ignore[method-assign]
    r = run(host, store, cancel=cancel)
    assert r.cancelled and "no destructive step had started" in r.why
    assert ok("x").done == []


def test_library_mismatch_has_one_answer_in_the_plan_the_readme_and_the_architecture() -> None:
    """Switch back to the previous release with a good library version first, else pin one."""
    plan = make_plan(type("D", (), {"cause": "library_mismatch", "code": None, "evidence": [], "confidence": 0.9})(),
                     "shop", PlanOptions(has_previous_release=True))
    assert plan.steps[0].name == "rollback_release" and plan.rollback_chain[0][0].name == "pin_library"
    root = Path(__file__).resolve().parents[2]
    readme = " ".join((root / "README.md").read_text().split())
    assert ("library mismatch (ERR_REQUIRE_ESM, a missing module, or a known-bad version such as 6.7.20 even while "
            "the bot still runs) → switch back to the newest previous release whose library is good, else pin a "
            "known-good version in a new release") in readme
    arch = (root / "docs/ARCHITECTURE.md").read_text()
    assert ("| library_mismatch (ESM, missing module, known-bad version) | switch back to the newest previous release "
            "with a good library version | pin a known-good version in a new release |") in arch
