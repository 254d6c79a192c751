"""`waops recover` as a service: lock -> diagnose -> plan -> confirm -> incident -> execute -> verify ->
rollback chain -> close the incident. The CLI only renders; hosts, playbooks and the clock come in
through `Deps`, so the whole flow is tested without a host.

Outcomes (contract 6) and what they mean here:
- resolved: the first fix worked and was verified;
- rolled_back: the first fix failed, a later stage of the rollback chain brought the bot back;
- needs_human: only a person can act (ban, rate limit, unknown cause, every fix failed, QR not scanned,
  destructive steps declined);
- failed: the run itself broke (cancelled, a playbook could not start, the store failed mid-way).
A healthy bot and a dry run open no incident.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from waops.errors import EXIT_INTERRUPTED, EXIT_NEEDS_HUMAN, EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE
from waops.execute import Cancel, Progress, RunResult
from waops.plan import Plan, PlanOptions, Step, make_plan
from waops.qrshow import LinkRequest
from waops.verify import BotState, Probe, RoundTrip, VerifyResult, wait_verified

# Outcomes beyond contract 6 that the summary shows but never stores.
HEALTHY, DRY_RUN, UNREACHABLE = "healthy", "dry_run", "unreachable"


@dataclass(frozen=True)
class Target:
    host: str
    bot: str
    pairing: str = "qr"
    phone: str | None = None
    sim_control_url: str | None = None
    library_expected: str | None = None


@dataclass(frozen=True)
class RecoverOptions:
    dry_run: bool = False
    yes: bool = False
    pair_phone: str | None = None
    verify_timeout_s: int = 120
    link_timeout_s: int = 600
    playbook_timeout_s: int = 900
    network_backoff_s: int = 30


@dataclass
class StepOutcome:
    name: str
    kind: str
    stage: int  # 0 = first fix, 1.. = rollback chain stages
    started_at: datetime
    ended_at: datetime
    result: str  # ok, failed, cancelled, needs_human
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "stage": self.stage, "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat(), "result": self.result, "detail": self.detail,
                "data": self.data}  # fmt: skip


@dataclass
class RecoverResult:
    host: str
    bot: str
    outcome: str
    why: str
    cause: str | None = None
    code: int | None = None
    evidence: list[str] = field(default_factory=list)
    plan: Plan | None = None
    steps: list[StepOutcome] = field(default_factory=list)
    incident_id: int | None = None
    started_at: datetime | None = None
    detected_at: datetime | None = None
    resolved_at: datetime | None = None
    human_wait_s: float = 0.0
    link: LinkRequest | None = None
    cancelled: bool = False

    @property
    def mttr_s(self) -> float | None:
        if self.outcome not in ("resolved", "rolled_back") or not (self.resolved_at and self.started_at):
            return None
        return (self.resolved_at - self.started_at).total_seconds()

    @property
    def exit_code(self) -> int:
        if self.cancelled:
            return EXIT_INTERRUPTED
        return {
            "resolved": EXIT_OK, "rolled_back": EXIT_OK, HEALTHY: EXIT_OK, DRY_RUN: EXIT_OK,
            "needs_human": EXIT_NEEDS_HUMAN, UNREACHABLE: EXIT_UNREACHABLE,
        }.get(self.outcome, EXIT_PROBLEM)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "host": self.host, "bot": self.bot, "outcome": self.outcome, "why": self.why, "cause": self.cause,
            "code": self.code, "evidence": self.evidence, "plan": self.plan.to_dict() if self.plan else None,
            "steps": [s.to_dict() for s in self.steps], "incident_id": self.incident_id,
            "started_at": iso(self.started_at), "detected_at": iso(self.detected_at),
            "resolved_at": iso(self.resolved_at), "mttr_s": self.mttr_s, "human_wait_s": round(self.human_wait_s, 1),
            "link": self.link.to_dict() if self.link else None, "exit_code": self.exit_code,
        }  # fmt: skip


class UI(Protocol):
    """What the flow tells a person (the CLI draws it with rich; tests record it)."""

    def plan(self, target: Target, state: BotState, plan: Plan) -> None: ...
    def confirm(self, target: Target, plan: Plan) -> bool: ...
    def step(self, target: Target, step: Step, stage: int) -> None: ...
    def progress(self, target: Target, p: Progress) -> None: ...
    def step_done(self, target: Target, outcome: StepOutcome) -> None: ...
    def link(self, target: Target, link: LinkRequest) -> None: ...
    def status(self, target: Target, text: str) -> None: ...


class QuietUI:
    def plan(self, target: Target, state: BotState, plan: Plan) -> None: ...
    def confirm(self, target: Target, plan: Plan) -> bool:
        return False  # nobody to ask: destructive steps need --yes

    def step(self, target: Target, step: Step, stage: int) -> None: ...
    def progress(self, target: Target, p: Progress) -> None: ...
    def step_done(self, target: Target, outcome: StepOutcome) -> None: ...
    def link(self, target: Target, link: LinkRequest) -> None: ...
    def status(self, target: Target, text: str) -> None: ...


class Store(Protocol):
    def open(self, *, host: str, bot: str, cause: str, code: int | None, started_at: datetime,
             evidence: Any = (), detected_at: datetime | None = None) -> int: ...
    def add_step(self, incident_id: int, *, name: str, started_at: datetime, ended_at: datetime | None,
                 result: str, detail: str = "") -> None: ...
    def close(self, incident_id: int, outcome: str, resolved_at: datetime | None = None, *,
              human_wait_s: float | None = None) -> None: ...


RunStep = Callable[[Target, Step, Mapping[str, Any], Callable[[Progress], None], Cancel, int], RunResult]


@dataclass
class Deps:
    """The edges: how to look at the bot, run a playbook, prove a round trip, lock, store, tell time."""

    probe: Probe
    run_step: RunStep
    store: Store
    round_trip: RoundTrip | None = None
    lock: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    verify: Callable[..., VerifyResult] = wait_verified


def first_evidence(diagnosis: Any, detected: datetime) -> datetime:
    """started_at of the incident: the time of the first evidence, never later than detection."""
    raw = getattr(diagnosis, "started_at", None)
    t: datetime | None = None
    if isinstance(raw, (int, float)):
        t = datetime.fromtimestamp(raw / 1000 if raw > 1e11 else raw, UTC)
    elif isinstance(raw, str) and raw:
        with contextlib.suppress(ValueError):
            t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
    if t is None or t > detected:
        return detected
    return t


def plan_options(target: Target, state: BotState, opts: RecoverOptions) -> PlanOptions:
    lib = state.facts.get("library") if isinstance(state.facts.get("library"), Mapping) else {}
    assert isinstance(lib, Mapping)
    pairing = "code" if opts.pair_phone else ("code" if target.pairing == "code" else "qr")
    return PlanOptions(
        pairing=pairing,  # type: ignore[arg-type]
        has_previous_release=bool(lib.get("previous_release")) if lib else True,
        known_good_version=_pin_target(target, state, lib),
        verify_timeout_s=opts.verify_timeout_s,
        link_timeout_s=opts.link_timeout_s,
        network_backoff_s=opts.network_backoff_s,
    )


def _pin_target(target: Target, state: BotState, lib: Mapping[str, Any]) -> str | None:
    """The version pin_library moves to: the expected one, unless WhatsApp refuses the bot (405) while it
    already runs that version (or a newer one); then the newest offered, not known-bad version
    (`newest`, resolved on the host by pin_library.yml)."""
    from waops.versions import older_than

    expected = target.library_expected or (lib.get("expected") if lib else None)
    installed = lib.get("installed") if lib else None
    if getattr(state.diagnosis, "cause", None) != "client_outdated" or not installed:
        return expected
    if expected and older_than(str(installed), str(expected)):
        return expected
    return "newest"


class Recovery:
    """One bot's recovery. `run()` never raises for a failed repair: the result says what happened."""

    def __init__(self, target: Target, opts: RecoverOptions, deps: Deps, ui: UI | None = None,
                 cancel: Cancel | None = None) -> None:
        self.t = target
        self.o = opts
        self.d = deps
        self.ui = ui or QuietUI()
        self.cancel = cancel or Cancel()
        self._link_shown_at: datetime | None = None

    def run(self) -> RecoverResult:
        with self.d.lock():
            return self._run()

    # -- the flow ---------------------------------------------------------------------------------
    def _run(self) -> RecoverResult:
        t = self.t
        detected = self.d.now()
        from waops.errors import UnreachableError

        try:
            state = self.d.probe()
        except UnreachableError as exc:
            return RecoverResult(t.host, t.bot, UNREACHABLE, str(exc), detected_at=detected)
        diag = state.diagnosis
        plan = make_plan(diag, t.bot, plan_options(t, state, self.o))
        self.ui.plan(t, state, plan)
        res = RecoverResult(t.host, t.bot, HEALTHY, plan.why, diag.cause, diag.code, list(diag.evidence), plan,
                            started_at=first_evidence(diag, detected), detected_at=detected)
        if plan.intent == "nothing_to_do":
            return res  # healthy: nothing touched, nothing recorded
        if self.o.dry_run:
            res.outcome, res.why = DRY_RUN, f"dry run: {plan.why}"
            return res
        if plan.intent == "needs_human":
            self._open(res)
            for step in plan.steps:  # alert/escalate: recorded, nothing on the host is touched
                self._record(res, StepOutcome(step.name, step.kind, 0, self.d.now(), self.d.now(), "needs_human",
                                              plan.why))
            return self._close(res, "needs_human", plan.why)
        if plan.destructive and not self.o.yes and not self.ui.confirm(t, plan):
            self._open(res)
            return self._close(res, "needs_human", "destructive steps were not confirmed (use --yes)")
        self._open(res)
        try:
            stages = [plan.steps, *plan.rollback_chain]
            for index, stage in enumerate(stages):
                verdict = self._stage(res, stage, index)
                if verdict == "ok":
                    return self._close(res, "resolved" if index == 0 else "rolled_back",
                                       "fixed and verified" if index == 0 else
                                       f"first fix failed; stage {index} of the rollback chain fixed it")
                if verdict == "escalate":
                    return self._close(res, "needs_human", self._why_human(res))
                if verdict == "cancelled":
                    self._settle_after_cancel(res)
                    res.cancelled = True
                    return self._close(res, "failed", "cancelled by the operator")
            return self._close(res, "failed", "every stage failed")
        except Exception as exc:  # the store, a playbook that could not start: record, then report
            res.steps.append(StepOutcome("error", "error", -1, self.d.now(), self.d.now(), "failed", str(exc)))
            with contextlib.suppress(Exception):
                return self._close(res, "failed", f"recover broke: {exc}")
            res.outcome, res.why = "failed", f"recover broke: {exc}"
            return res

    def _stage(self, res: RecoverResult, stage: tuple[Step, ...], index: int) -> str:
        """Run one stage: 'ok' when its verify passed, 'failed', 'escalate' or 'cancelled'."""
        for step in stage:
            if self.cancel.is_set():
                return "cancelled"
            self.ui.step(self.t, step, index)
            if step.kind in ("escalate", "alert"):
                now = self.d.now()
                self._record(res, StepOutcome(step.name, step.kind, index, now, now, "needs_human", step.description))
                return "escalate"
            if step.kind == "verify":
                outcome = self._verify(res, step, index)
                return "ok" if outcome.result == "ok" else ("cancelled" if outcome.result == "cancelled" else "failed")
            outcome = self._playbook(res, step, index)
            if outcome.result == "cancelled":
                return "cancelled"
            if outcome.result != "ok":
                return "failed"
        return "ok"  # a stage with no verify step (not made by the planner) counts as done

    def _playbook(self, res: RecoverResult, step: Step, index: int) -> StepOutcome:
        extra = dict(step.extra_vars)
        if step.name == "reset_session" and self.o.pair_phone:
            extra["waops_pair_phone"] = self.o.pair_phone
        started = self.d.now()
        run = self.d.run_step(self.t, step, extra, lambda p: self.ui.progress(self.t, p), self.cancel,
                              self.o.playbook_timeout_s)
        if run.status == "canceled" or self.cancel.is_set():
            result, detail = "cancelled", "cancelled by the operator"
        elif run.ok:
            result, detail = "ok", _run_summary(run)
        else:
            result = "failed"
            detail = "; ".join(f"{f.task}: {f.message}" for f in run.failures[:3]) or f"{run.status} (rc {run.rc})"
        data = {k: v for k, v in run.set_stats.items() if k != "waops_link"}
        link = run.set_stats.get("waops_link")
        if isinstance(link, Mapping):
            req = LinkRequest.from_mapping(link, bot=self.t.bot, host=self.t.host)
            data["link"] = req.to_dict()
            if req.pending:
                res.link = req
                self._link_shown_at = self.d.now()  # the person's wait starts when the code is shown
                self.ui.link(self.t, req)
        return self._record(res, StepOutcome(step.name, step.kind, index, started, self.d.now(), result, detail, data))

    def _verify(self, res: RecoverResult, step: Step, index: int) -> StepOutcome:
        started = self.d.now()
        wait_link = bool(step.extra_vars.get("wait_for_link"))
        raw = step.extra_vars.get("timeout_s")
        timeout = float(self.o.verify_timeout_s if raw is None else raw)
        shown: list[LinkRequest] = []

        def on_link(link: LinkRequest) -> None:
            # The playbook's QR may already be stale (they rotate): show each new one.
            if res.link is None or (link.qr, link.pairing_code) != (res.link.qr, res.link.pairing_code):
                res.link = link
                self.ui.link(self.t, link)
            shown.append(link)

        v = self.d.verify(
            self.d.probe, timeout_s=timeout, host=self.t.host, round_trip=self.d.round_trip,
            wait_for_link=wait_link, on_link=on_link, on_status=lambda s: self.ui.status(self.t, s),
            cancelled=self.cancel.is_set,
        )
        if wait_link:
            res.human_wait_s += v.human_wait_s
            if self._link_shown_at is not None and v.link_shown:
                # shown by the playbook before the verify started waiting
                res.human_wait_s += max(0.0, (started - self._link_shown_at).total_seconds())
            elif self._link_shown_at is not None and v.ok:
                res.human_wait_s += max(0.0, (self.d.now() - self._link_shown_at).total_seconds())
            self._link_shown_at = None
        if self.cancel.is_set():
            result = "cancelled"
        elif v.ok:
            result = "ok"
        elif wait_link and (v.link_shown or res.link is not None):
            result = "needs_human"  # the link was shown and nobody scanned it in time
        else:
            result = "failed"
        data = {"elapsed_s": round(v.elapsed_s, 1), "human_wait_s": round(v.human_wait_s, 1)}
        out = self._record(res, StepOutcome("verify", "verify", index, started, self.d.now(), result, v.detail, data))
        if result == "ok":
            res.resolved_at = out.ended_at
        return out

    def _settle_after_cancel(self, res: RecoverResult) -> None:
        """After Ctrl-C the agent's own steps are atomic; make sure the bot's service runs again."""
        last = next((s for s in reversed(res.steps) if s.kind == "playbook"), None)
        if last is None:
            return
        from waops.plan import restart

        step = restart(self.t.bot)
        started = self.d.now()
        try:
            run = self.d.run_step(self.t, step, dict(step.extra_vars), lambda p: None, Cancel(), 180)
            result = "ok" if run.ok else "failed"
            detail = "restart after cancel: " + (_run_summary(run) or run.status)
        except Exception as exc:
            result, detail = "failed", f"restart after cancel: {exc}"
        self._record(res, StepOutcome("restart_after_cancel", "playbook", -1, started, self.d.now(), result, detail))

    # -- the incident -----------------------------------------------------------------------------
    def _open(self, res: RecoverResult) -> None:
        assert res.started_at and res.detected_at and res.cause
        evidence = [*res.evidence, f"plan: {res.why}"]
        res.incident_id = self.d.store.open(host=res.host, bot=res.bot, cause=res.cause, code=res.code,
                                            started_at=res.started_at, evidence=evidence,
                                            detected_at=res.detected_at)

    def _record(self, res: RecoverResult, outcome: StepOutcome) -> StepOutcome:
        res.steps.append(outcome)
        self.ui.step_done(self.t, outcome)
        if res.incident_id is not None:
            self.d.store.add_step(res.incident_id, name=outcome.name, started_at=outcome.started_at,
                                  ended_at=outcome.ended_at, result=outcome.result, detail=outcome.detail[:2000])
        return outcome

    def _close(self, res: RecoverResult, outcome: str, why: str) -> RecoverResult:
        res.outcome, res.why = outcome, why
        if outcome in ("resolved", "rolled_back"):
            res.resolved_at = res.resolved_at or self.d.now()
        else:
            res.resolved_at = None
        if res.incident_id is not None:
            self.d.store.close(res.incident_id, outcome, res.resolved_at, human_wait_s=res.human_wait_s)
        return res

    def _why_human(self, res: RecoverResult) -> str:
        unscanned = [s for s in res.steps if s.name == "verify" and s.result == "needs_human"]
        if unscanned:
            return "the new link (QR code or pairing code) was not completed on the phone in time"
        failed = [s for s in res.steps if s.result == "failed"]
        last = f": last failure {failed[-1].name}: {failed[-1].detail}" if failed else ""
        return f"every automatic fix failed{last}"


def _run_summary(run: RunResult) -> str:
    changed = sum(s.changed for s in run.stats.values())
    return f"{run.playbook}: {run.status}, {changed} change(s)"


# --- default edges ------------------------------------------------------------------------------


def playbook_runner(inventory: str | Path | None) -> RunStep:
    """Run a plan step's playbook with ansible-runner, limited to the target host."""

    def run(target: Target, step: Step, extravars: Mapping[str, Any], on_progress: Callable[[Progress], None],
            cancel: Cancel, timeout_s: int) -> RunResult:
        from waops.execute import run_playbook

        assert step.playbook
        return run_playbook(step.playbook, inventory=inventory, limit=target.host, extravars=extravars,
                            timeout_s=timeout_s, on_progress=on_progress, cancel=cancel)

    return run


def targets(inventory: str | Path, patterns: list[str], bot: str | None, pair_phone: str | None = None
            ) -> list[tuple[Any, Target]]:
    """(inventory Host, Target) for every bot of the matched hosts (only `bot` when given)."""
    from waops.errors import UsageError
    from waops.inventory import load
    from waops.probe import warn_divergences

    hosts = load(inventory, patterns or ["all"])
    warn_divergences(hosts)  # before any host is contacted: where the probe's route is not Ansible's
    out: list[tuple[Any, Target]] = []
    for h in hosts:
        for b in h.bots:
            if bot and b.name != bot:
                continue
            phone = b.extra.get("phone")
            out.append((h, Target(
                host=h.name, bot=b.name, pairing="code" if pair_phone else b.pairing,
                phone=str(phone) if phone else None, sim_control_url=h.extra.get("waops_sim_control_url"),
                library_expected=b.library_expected,
            )))  # fmt: skip
    if not out:
        raise UsageError(f"no bot {bot!r} on {' '.join(patterns) or 'all'}" if bot else "no bots on those hosts")
    return out


def host_probe(host: Any, bot: str, settings: Any) -> Probe:
    """Facts of one bot over SSH (waops.probe), as a BotState; UnreachableError when unreachable."""
    from waops.errors import UnreachableError
    from waops.probe import probe_host

    def probe() -> BotState:
        report = probe_host(host, settings, bots=[bot])
        if not report.reachable:
            raise UnreachableError(report.error or f"{host.name}: unreachable")
        for b in report.bots:
            if b.bot == bot:
                return BotState(b.diagnosis, b.facts or {"bot": bot})
        from waops.diagnose import Diagnosis

        return BotState(Diagnosis("unknown", None, [report.error or "no facts for this bot"], 0.1), {"bot": bot})

    return probe


def default_deps(host: Any, target: Target, inventory: str | Path, store: Any, settings: Any) -> Deps:
    from waops.locking import BotLock
    from waops.verify import sim_round_trip

    rt = sim_round_trip(target.sim_control_url, target.phone) if target.sim_control_url and target.phone else None
    return Deps(probe=host_probe(host, target.bot, settings), run_step=playbook_runner(inventory), store=store,
                round_trip=rt, lock=lambda: BotLock(target.host, target.bot))
