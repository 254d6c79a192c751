"""The recover flow without a host: scripted facts (what a host would answer) and a scripted playbook
runner (what ansible-runner would report); the incident store is the real SQLite one."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from waops.diagnose import Diagnosis
from waops.execute import Cancel, HostStats, Progress, RunResult, TaskFailure
from waops.incidents import IncidentStore, connect
from waops.model import LinkRequest
from waops.plan import Step
from waops.recover import Deps, RecoverOptions, Recovery, Target, first_evidence
from waops.verify import BotState, wait_verified

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def healthy() -> BotState:
    return BotState(Diagnosis("healthy", None, ["health: open"], 0.9),
                    {"bot": "shop", "health": {"connection": "open", "age_s": 3}})


def broken(cause: str, code: int | None = None, started: str | None = "2026-11-22T02:50:00Z",
           health: Mapping[str, Any] | None = None, previous_release: str | None = "r1") -> BotState:
    facts = {"bot": "shop", "health": dict(health or {"connection": "close", "age_s": 3}),
             "library": {"installed": "6.7.18", "expected": "6.7.18", "previous_release": previous_release}}
    return BotState(Diagnosis(cause, code, [f"evidence for {cause}"], 0.85, started), facts)


class Host:
    """Scripted answers: facts in order (the last repeats), playbook results by playbook name."""

    def __init__(self, states: list[BotState], results: Mapping[str, list[RunResult]] | None = None) -> None:
        self.states = list(states)
        self.results = {k: list(v) for k, v in (results or {}).items()}
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.probes = 0

    def probe(self) -> BotState:
        self.probes += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def run_step(self, target: Target, step: Step, extravars: Mapping[str, Any], on_progress: Any,
                 cancel: Cancel, timeout_s: int) -> RunResult:
        assert step.playbook and timeout_s > 0
        self.ran.append((step.playbook, dict(extravars)))
        on_progress(Progress("task_start", "Read the bot's agent config"))
        queue = self.results.get(step.playbook) or []
        return queue.pop(0) if queue else ok(step.playbook)


def ok(playbook: str, stats: dict[str, Any] | None = None) -> RunResult:
    return RunResult(playbook, "successful", 0, {"h": HostStats(ok=3, changed=1)}, [], dict(stats or {}))


def failed(playbook: str, why: str = "boom") -> RunResult:
    return RunResult(playbook, "failed", 2, {"h": HostStats(failed=1)}, [TaskFailure("h", "task", why)])


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        self.t += timedelta(seconds=5)
        return self.t


class RecordingUI:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.links: list[LinkRequest] = []
        self.asked = 0
        self.events: list[str] = []

    def plan(self, target: Target, state: BotState, plan: Any) -> None:
        self.events.append(f"plan {plan.cause}")

    def confirm(self, target: Target, plan: Any) -> bool:
        self.asked += 1
        return self.answer

    def step(self, target: Target, step: Step, stage: int) -> None:
        self.events.append(f"step {step.name} {stage}")

    def progress(self, target: Target, p: Progress) -> None:
        self.events.append("progress")

    def step_done(self, target: Target, outcome: Any) -> None:
        self.events.append(f"done {outcome.name} {outcome.result}")

    def link(self, target: Target, link: LinkRequest) -> None:
        self.links.append(link)

    def status(self, target: Target, text: str) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with connect(tmp_path / "incidents.db") as s:
        yield s


def run(host: Host, store: IncidentStore, *, opts: RecoverOptions | None = None, ui: RecordingUI | None = None,
        cancel: Cancel | None = None, round_trip: Any = None, target: Target | None = None) -> Any:
    fast = functools.partial(wait_verified, interval_s=0, settle_s=0, sleep=lambda _s: None)
    deps = Deps(probe=host.probe, run_step=host.run_step, store=store, round_trip=round_trip,
                now=Clock().now, verify=fast)
    return Recovery(target or Target("bot-1", "shop", phone="15550100001"), opts or RecoverOptions(yes=True),
                    deps, ui or RecordingUI(), cancel).run()


def test_healthy_bot_is_left_alone_and_nothing_is_recorded(store: IncidentStore) -> None:
    host = Host([healthy()])
    r = run(host, store)
    assert (r.outcome, r.exit_code, host.ran, r.incident_id) == ("healthy", 0, [], None)
    assert store.list() == []


def test_banned_number_touches_nothing_and_needs_a_person(store: IncidentStore) -> None:
    host = Host([broken("banned", 403)])
    r = run(host, store)
    assert host.ran == []
    assert (r.outcome, r.exit_code) == ("needs_human", 4)
    assert "banned" in r.why
    inc = store.get(r.incident_id)
    assert inc is not None and inc.outcome == "needs_human" and inc.mttr_s is None
    assert [s.name for s in inc.steps] == ["alert"]


def test_process_down_restart_verified_resolves_with_mttr_from_first_evidence(store: IncidentStore) -> None:
    host = Host([broken("process_down"), healthy()])
    r = run(host, store)
    assert [p for p, _ in host.ran] == ["restart.yml"]
    assert (r.outcome, r.exit_code) == ("resolved", 0)
    inc = store.get(r.incident_id)
    assert inc is not None and inc.outcome == "resolved"
    assert inc.started_at == datetime(2026, 11, 22, 2, 50, tzinfo=UTC)  # the log's first evidence
    assert inc.mttr_s == r.mttr_s and r.mttr_s > 600
    assert [(s.name, s.result) for s in inc.steps] == [("restart", "ok"), ("verify", "ok")]


def test_failed_fix_walks_the_rollback_chain_and_records_it(store: IncidentStore) -> None:
    host = Host([broken("process_down"), healthy()], {"restart.yml": [failed("restart.yml", "unit failed")]})
    r = run(host, store)
    assert [p for p, _ in host.ran] == ["restart.yml", "rollback_release.yml"]
    assert r.outcome == "rolled_back" and r.exit_code == 0
    inc = store.get(r.incident_id)
    assert inc is not None and inc.outcome == "rolled_back" and inc.mttr_s is not None
    assert [(s.name, s.result) for s in inc.steps] == [("restart", "failed"), ("rollback_release", "ok"),
                                                       ("verify", "ok")]
    assert "unit failed" in inc.steps[0].detail


def test_a_fix_that_never_verifies_escalates_to_a_person(store: IncidentStore) -> None:
    host = Host([broken("crash")])  # stays broken whatever runs
    r = run(host, store, opts=RecoverOptions(yes=True, verify_timeout_s=0))
    assert [p for p, _ in host.ran] == ["rollback_release.yml"]
    assert (r.outcome, r.exit_code) == ("needs_human", 4)
    inc = store.get(r.incident_id)
    assert inc is not None and [s.name for s in inc.steps] == ["rollback_release", "verify", "escalate"]


def test_logged_out_resets_shows_the_qr_and_counts_the_human_wait(store: IncidentStore) -> None:
    waiting = broken("logged_out", 401, health={"connection": "waiting_link", "qr": "2@second", "age_s": 1})
    host = Host([broken("logged_out", 401), waiting, waiting, healthy()],
                {"reset_session.yml": [ok("reset_session.yml", {"waops_link": {
                    "bot": "shop", "host": "bot-1", "qr": "2@first", "pairing_code": None,
                    "connection": "waiting_link"}})]})
    ui = RecordingUI()
    r = run(host, store, ui=ui)
    assert [p for p, _ in host.ran] == ["reset_session.yml"]
    assert host.ran[0][1]["waops_pairing"] == "qr"
    assert [link.qr for link in ui.links] == ["2@first", "2@second"]  # each new QR is shown
    assert r.outcome == "resolved"
    inc = store.get(r.incident_id)
    assert inc is not None and inc.human_wait_s > 0 and inc.human_wait_s == r.human_wait_s


def test_pair_phone_asks_for_a_pairing_code(store: IncidentStore) -> None:
    host = Host([broken("logged_out", 401), healthy()])
    run(host, store, opts=RecoverOptions(yes=True, pair_phone="15550100001"))
    assert host.ran[0][0] == "reset_session.yml"
    assert host.ran[0][1]["waops_pairing"] == "code" and host.ran[0][1]["waops_pair_phone"] == "15550100001"


def test_qr_never_scanned_ends_as_needs_human(store: IncidentStore) -> None:
    waiting = broken("logged_out", 401, health={"connection": "waiting_link", "qr": "2@q", "age_s": 1})
    host = Host([broken("logged_out", 401), waiting])
    r = run(host, store, opts=RecoverOptions(yes=True, link_timeout_s=0))
    assert r.outcome == "needs_human" and "not completed on the phone" in r.why


def test_destructive_steps_need_confirmation(store: IncidentStore) -> None:
    host = Host([broken("creds_lost")])
    ui = RecordingUI(answer=False)
    r = run(host, store, opts=RecoverOptions(yes=False), ui=ui)
    assert ui.asked == 1 and host.ran == []
    assert r.outcome == "needs_human" and "--yes" in r.why


def test_dry_run_plans_but_changes_and_records_nothing(store: IncidentStore) -> None:
    host = Host([broken("corrupt_keys", 500)])
    r = run(host, store, opts=RecoverOptions(dry_run=True))
    assert (r.outcome, host.ran, store.list()) == ("dry_run", [], [])
    assert r.plan is not None and [s.name for s in r.plan.steps] == ["prune_keys", "restart", "verify"]


def test_unreachable_host_is_a_clear_failure(store: IncidentStore) -> None:
    from waops.errors import UnreachableError

    def probe() -> BotState:
        raise UnreachableError("bot-1: connection refused")

    deps = Deps(probe=probe, run_step=Host([healthy()]).run_step, store=store)
    r = Recovery(Target("bot-1", "shop"), RecoverOptions(yes=True), deps).run()
    assert (r.outcome, r.exit_code) == ("unreachable", 3) and "refused" in r.why


def test_cancel_during_a_step_records_failed_and_restarts_the_bot(store: IncidentStore) -> None:
    cancel = Cancel()
    host = Host([broken("creds_lost")])
    original = host.run_step

    def run_step(*args: Any) -> RunResult:
        result = original(*args)
        if result.playbook == "restore_session.yml":
            cancel.set()  # Ctrl-C while the playbook ran
            return RunResult("restore_session.yml", "canceled", 254)
        return result

    host.run_step = run_step  # type: ignore[method-assign]
    r = run(host, store, cancel=cancel)
    assert r.outcome == "failed" and r.exit_code == 130
    assert [p for p, _ in host.ran] == ["restore_session.yml", "restart.yml"]
    inc = store.get(r.incident_id)
    assert inc is not None and inc.outcome == "failed"
    assert [(s.name, s.result) for s in inc.steps] == [("restore_session", "cancelled"),
                                                       ("restart_after_cancel", "ok")]


def test_round_trip_must_answer_before_the_bot_counts_as_working(store: IncidentStore) -> None:
    answers = iter([(False, "test message: timed out"), (True, "test message answered: 'ok'")])
    host = Host([broken("network", 428), healthy()])
    r = run(host, store, round_trip=lambda _t: next(answers))
    assert r.outcome == "resolved"
    verify = next(s for s in r.steps if s.name == "verify")
    assert "answered" in verify.detail


def test_first_evidence_is_never_after_detection() -> None:
    detected = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    d = Diagnosis("crash", None, [], 0.8, "2026-11-22T02:59:00.123Z")
    assert first_evidence(d, detected) == datetime(2026, 11, 22, 2, 59, 0, 123000, tzinfo=UTC)
    assert first_evidence(Diagnosis("crash", None, [], 0.8, "2026-11-22T04:00:00Z"), detected) == detected
    assert first_evidence(Diagnosis("crash", None, [], 0.8, "garbage"), detected) == detected
    assert first_evidence(Diagnosis("crash", None, [], 0.8, None), detected) == detected


def test_pin_target_moves_past_a_version_whatsapp_refuses() -> None:
    from waops.diagnose import Diagnosis
    from waops.model import Library
    from waops.recover import Target, _pin_target
    from waops.verify import BotState

    t = Target("h", "shop", library_expected="6.7.18")
    refused = BotState(Diagnosis("client_outdated", 405))
    assert _pin_target(t, refused, Library(installed="6.7.18", expected="6.7.18")) == "newest"
    assert _pin_target(t, refused, Library(installed="6.7.5", expected="6.7.18")) == "6.7.18"
    assert _pin_target(t, BotState(Diagnosis("crash")), Library(installed="6.7.18")) == "6.7.18"
