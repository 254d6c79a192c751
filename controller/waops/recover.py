"""`waops recover` as a service: lock (here, and the repair lease on the bot's host) -> diagnose -> plan ->
confirm -> incident -> execute -> verify -> rollback chain -> close the incident (-> post-repair backup).
The CLI only renders; hosts, playbooks and the clock come in through `Deps`, so the whole flow is tested
without a host.

Outcomes (contract 6) and what they mean here:
- resolved: the first fix worked and was verified;
- rolled_back: the first fix failed, a later stage of the rollback chain brought the bot back;
- needs_human: only a person can act (ban, rate limit, unknown cause, every fix failed, QR not scanned,
  destructive steps declined);
- failed: the run itself broke (cancelled, a playbook could not start, the store failed mid-way), or a
  repair step failed before any verify (a refused reset, PostgreSQL down): the why is that step's reason.
A healthy bot and a dry run open no incident.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from waops.errors import (
    EXIT_INTERRUPTED,
    EXIT_NEEDS_HUMAN,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    ExitCode,
    WaopsError,
)
from waops.execute import Cancel, Progress, RunResult
from waops.hostlease import HostLease
from waops.model import BotFacts, Health, Library, LinkRequest, StepRecord
from waops.plan import Plan, PlanOptions, Step, make_plan
from waops.verify import ROUNDTRIP_VAR, BotState, Probe, RoundTrip, VerifyResult, wait_verified
from waops_host.base import parse_iso

# Plan steps after which the session on the host is a new one (a new device, or an older state).
SESSION_CHANGING = ("reset_session", "restore_session")

# Outcomes beyond contract 6 that the summary shows but never stores.
HEALTHY, DRY_RUN, UNREACHABLE = "healthy", "dry_run", "unreachable"


@dataclass(frozen=True)
class Target:
    host: str
    bot: str
    pairing: str = "qr"
    phone: str | None = None
    roundtrip_command: str | None = None  # the inventory's waops_verify_roundtrip_command
    library_expected: str | None = None
    home_host: str | None = None  # the host that owns the bot when it is listed on several (inventory)


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
class RecoverResult:
    host: str
    bot: str
    outcome: str
    why: str
    cause: str | None = None
    code: int | None = None
    evidence: list[str] = field(default_factory=list)
    plan: Plan | None = None
    steps: list[StepRecord] = field(default_factory=list)
    incident_id: int | None = None
    started_at: datetime | None = None
    detected_at: datetime | None = None
    resolved_at: datetime | None = None
    human_wait_s: float = 0.0
    link: LinkRequest | None = None
    cancelled: bool = False
    busy: bool = False  # another run held the bot's lock: nothing was done

    @property
    def mttr_s(self) -> float | None:
        if self.outcome not in ("resolved", "rolled_back") or not (self.resolved_at and self.started_at):
            return None
        return (self.resolved_at - self.started_at).total_seconds()

    @property
    def exit_code(self) -> int:
        if self.cancelled:
            return EXIT_INTERRUPTED
        if self.busy:
            return ExitCode.BUSY
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
    def step_done(self, target: Target, outcome: StepRecord) -> None: ...
    def link(self, target: Target, link: LinkRequest) -> None: ...
    def status(self, target: Target, text: str) -> None: ...
    def error(self, target: Target, text: str) -> None: ...


class QuietUI:
    def plan(self, target: Target, state: BotState, plan: Plan) -> None: ...
    def confirm(self, target: Target, plan: Plan) -> bool:
        return False  # nobody to ask: destructive steps need --yes

    def step(self, target: Target, step: Step, stage: int) -> None: ...
    def progress(self, target: Target, p: Progress) -> None: ...
    def step_done(self, target: Target, outcome: StepRecord) -> None: ...
    def link(self, target: Target, link: LinkRequest) -> None: ...
    def status(self, target: Target, text: str) -> None: ...
    def error(self, target: Target, text: str) -> None: ...


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
    lease: Callable[[], HostLease] | None = None  # the repair lease on the bot's host (None: no host agent)
    # Other running copies of a linked device, by fingerprint (waops.duplicates over the inventory's hosts).
    copies: Callable[[str], list[Any]] | None = None


def _step(name: str, kind: str, stage: int, started_at: datetime, ended_at: datetime, result: str,
          detail: str = "", data: dict[str, Any] | None = None) -> StepRecord:
    """A step of this run (kind and stage known: 0 = first fix, 1.. = rollback chain, -1 = outside)."""
    return StepRecord(name, started_at, ended_at, result, detail, kind, stage, data or {})


def first_evidence(diagnosis: Any, detected: datetime) -> datetime:
    """started_at of the incident: the time of the first evidence, never later than detection."""
    raw = getattr(diagnosis, "started_at", None)
    t: datetime | None = None
    if isinstance(raw, (int, float)):
        t = datetime.fromtimestamp(raw / 1000 if raw > 1e11 else raw, UTC)
    else:
        t = parse_iso(raw, naive="utc")
    if t is None or t > detected:
        return detected
    return t


def plan_options(target: Target, state: BotState, opts: RecoverOptions,
                 started_at: datetime | None = None, copy_hosts: tuple[str, ...] = ()) -> PlanOptions:
    lib = state.facts.library
    pairing = "code" if opts.pair_phone else ("code" if target.pairing == "code" else "qr")
    return PlanOptions(
        pairing=pairing,  # type: ignore[arg-type]
        has_previous_release=bool(lib.previous_release) if lib else True,
        known_good_version=_pin_target(target, state, lib or Library()),
        started_at=started_at.astimezone(UTC).isoformat().replace("+00:00", "Z") if started_at else None,
        copy_hosts=copy_hosts, home_host=target.home_host, host=target.host,
        verify_timeout_s=opts.verify_timeout_s,
        link_timeout_s=opts.link_timeout_s,
        network_backoff_s=opts.network_backoff_s,
    )


def _pin_target(target: Target, state: BotState, lib: Library) -> str | None:
    """The version pin_library moves to: the expected one, unless WhatsApp refuses the bot (405) while it
    already runs that version (or a newer one); then the newest offered, not known-bad version
    (`newest`, resolved on the host by pin_library.yml)."""
    from waops_host.versions import older_than

    expected = target.library_expected or lib.expected
    if getattr(state.diagnosis, "cause", None) != "client_outdated" or not lib.installed:
        return expected
    if expected and older_than(lib.installed, expected):
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
        self._lease: HostLease | None = None

    def run(self) -> RecoverResult:
        """LockBusyError (exit 75) when another run holds this bot, here or on its host."""
        from waops.errors import UnreachableError

        with self.d.lock():
            if self.d.lease is None or self.o.dry_run:
                return self._run()
            # Taken before the first look: a second controller stops here, before any incident or step.
            self._lease = self.d.lease()
            try:
                self._lease.begin()
            except UnreachableError as exc:
                return RecoverResult(self.t.host, self.t.bot, UNREACHABLE, str(exc), detected_at=self.d.now())
            try:
                return self._run()
            finally:
                self._lease.end()

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
        copies = self._copies(state)
        if copies:
            from waops.duplicates import fingerprint, mark

            mark(diag, copies, fingerprint(state.facts))
        hosts = tuple(dict.fromkeys(c.host for c in copies if c.host != t.host))
        plan = make_plan(diag, t.bot, plan_options(t, state, self.o, first_evidence(diag, detected), hosts))
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
                self._record(res, _step(step.name, step.kind, 0, self.d.now(), self.d.now(), "needs_human",
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
                    self._backup_after_repair(res, index)
                    return self._close(res, "resolved" if index == 0 else "rolled_back",
                                       "fixed and verified" if index == 0 else
                                       f"first fix failed; stage {index} of the rollback chain fixed it")
                if verdict == "escalate":
                    broke = self._broken_step(res)
                    if broke is not None:  # a repair step itself failed: a fault to fix, not a person's task
                        return self._close(res, "failed", f"{broke.name} failed: {broke.detail}")
                    return self._close(res, "needs_human", self._why_human(res))
                if verdict == "failed" and plan.stop_when_unchanged and index + 1 < len(stages) and \
                        self._still(res, plan.cause):
                    why = (f"{plan.cause} persists after {', '.join(s.name for s in stage if s.kind == 'playbook')}: "
                           "the fallbacks cannot fix it; a person must find what still causes it")
                    now = self.d.now()
                    self._record(res, _step("escalate", "escalate", index + 1, now, now, "needs_human", why))
                    return self._close(res, "needs_human", why)
                if verdict == "cancelled":
                    self._settle_after_cancel(res)
                    res.cancelled = True
                    return self._close(res, "failed", _cancel_why(res))
            return self._close(res, "failed", "every stage failed")
        except Exception as exc:  # the store, a playbook that could not start: record, then report
            res.steps.append(_step("error", "error", -1, self.d.now(), self.d.now(), "failed", str(exc)))
            with contextlib.suppress(Exception):
                return self._close(res, "failed", f"recover broke: {exc}")
            res.outcome, res.why = "failed", f"recover broke: {exc}"
            return res

    def _copies(self, state: BotState) -> list[Any]:
        """Other running copies of this bot's linked device; asked only for a conflict or a flapping bot."""
        from waops.duplicates import MASKED_CAUSES, fingerprint

        fp = fingerprint(state.facts)
        if self.d.copies is None or not fp or getattr(state.diagnosis, "cause", None) not in MASKED_CAUSES:
            return []
        return [c for c in self.d.copies(fp) if (c.host, c.bot) != (self.t.host, self.t.bot)]

    def _stage(self, res: RecoverResult, stage: tuple[Step, ...], index: int) -> str:
        """Run one stage: 'ok' when its verify passed, 'failed', 'escalate' or 'cancelled'."""
        for step in stage:
            if self.cancel.is_set():
                return "cancelled"
            self.ui.step(self.t, step, index)
            if step.kind in ("escalate", "alert"):
                now = self.d.now()
                self._record(res, _step(step.name, step.kind, index, now, now, "needs_human", step.description))
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

    def _playbook(self, res: RecoverResult, step: Step, index: int) -> StepRecord:
        extra = dict(step.extra_vars)
        if self._lease is not None:  # the agent's destructive commands belong to this lease
            extra["waops_repair_owner"] = self._lease.owner
        if step.name == "reset_session" and self.o.pair_phone:
            extra["waops_pair_phone"] = self.o.pair_phone
        started = self.d.now()
        run = self.d.run_step(self.t, step, extra, lambda p: self.ui.progress(self.t, p), self.cancel,
                              self.o.playbook_timeout_s)
        done = "; ".join(done_text(d) for d in run.done)
        if run.status == "canceled" or self.cancel.is_set():
            result = "cancelled"
            detail = "cancelled by the operator; " + (f"done before it stopped: {done}" if done
                                                        else "no destructive step had started")
        elif run.ok:
            result, detail = "ok", _run_summary(run) + (f"; {done}" if done else "")
        else:
            result = "failed"
            detail = "; ".join(f"{f.task}: {f.message}" for f in run.failures[:3]) or f"{run.status} (rc {run.rc})"
            detail += f"; {done}" if done else ""
        data = {k: v for k, v in run.set_stats.items() if k != "waops_link"}
        if run.done:
            data["done"] = [done_text(d) for d in run.done]
        link = run.set_stats.get("waops_link")
        if isinstance(link, Mapping):
            req = LinkRequest.from_health(Health.from_dict(link), bot=self.t.bot, host=self.t.host)
            data["link"] = req.to_dict()
            if req.pending:
                res.link = req
                self._link_shown_at = self.d.now()  # the person's wait starts when the code is shown
                self.ui.link(self.t, req)
        return self._record(res, _step(step.name, step.kind, index, started, self.d.now(), result, detail, data))

    def _verify(self, res: RecoverResult, step: Step, index: int) -> StepRecord:
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
            cancelled=self.cancel.is_set, fixing=step.extra_vars.get("fixing"),
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
        data: dict[str, Any] = {"elapsed_s": round(v.elapsed_s, 1), "human_wait_s": round(v.human_wait_s, 1)}
        if v.last is not None:
            data["last_cause"] = getattr(v.last.diagnosis, "cause", None)
        if v.moved_to:
            data["moved_to"] = v.moved_to
        out = self._record(res, _step("verify", "verify", index, started, self.d.now(), result, v.detail, data))
        if result == "ok":
            res.resolved_at = out.ended_at
        return out

    def _backup_after_repair(self, res: RecoverResult, index: int) -> None:
        """A relink or a restore made a new newest state: back it up (and verify) at once, so the next
        restore finds this device, not the one from before the repair."""
        if self._lease is None or not any(s.name in SESSION_CHANGING and s.result == "ok" for s in res.steps):
            return
        started = self.d.now()
        try:
            r = self._lease.backup()
            ok = bool(r.get("ok")) and bool(r.get("verified"))
            detail = (f"backup {r.get('id')} verified" if ok else
                      f"backup after the repair failed: {r.get('error') or r.get('why') or 'not verified'}")
        except Exception as exc:  # the bot is fixed either way; the cron backup comes later
            ok, detail = False, f"backup after the repair failed: {exc}"
        self._record(res, _step("backup", "backup", index, started, self.d.now(), "ok" if ok else "failed",
                                      detail))

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
        self._record(res, _step("restart_after_cancel", "playbook", -1, started, self.d.now(), result, detail))

    # -- the incident -----------------------------------------------------------------------------
    def _open(self, res: RecoverResult) -> None:
        assert res.started_at and res.detected_at and res.cause
        evidence = [*res.evidence, f"plan: {res.why}"]
        res.incident_id = self.d.store.open(host=res.host, bot=res.bot, cause=res.cause, code=res.code,
                                            started_at=res.started_at, evidence=evidence,
                                            detected_at=res.detected_at)

    def _record(self, res: RecoverResult, outcome: StepRecord) -> StepRecord:
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

    @staticmethod
    def _broken_step(res: RecoverResult) -> StepRecord | None:
        """The playbook step that ended the last stage before the escalation, when one failed (a refused
        reset, PostgreSQL down mid-restore): its detail is the reason, the outcome `failed`."""
        for s in reversed(res.steps[:-1]):
            if s.kind == "verify":
                return None
            if s.kind == "playbook" and s.result == "failed":
                return s
        return None

    @staticmethod
    def _still(res: RecoverResult, cause: str) -> bool:
        """True unless the stage's verify saw the bot move on to another cause: a failed playbook (the
        duplicate may still run) or the same cause again both mean the fallbacks are no answer."""
        last = res.steps[-1] if res.steps else None
        return last is None or last.kind != "verify" or last.data.get("last_cause") in (None, cause)

    def _why_human(self, res: RecoverResult) -> str:
        unscanned = [s for s in res.steps if s.name == "verify" and s.result == "needs_human"]
        if unscanned:
            return "the new link (QR code or pairing code) was not completed on the phone in time"
        failed = [s for s in res.steps if s.result == "failed"]
        last = f": last failure {failed[-1].name}: {failed[-1].detail}" if failed else ""
        return f"every automatic fix failed{last}"


def done_text(done: Mapping[str, Any]) -> str:
    """One guarded step's effect in words, from the agent's JSON report (execute.RunResult.done)."""
    report = done.get("report") if isinstance(done.get("report"), Mapping) else {}
    results = report.get("results") if isinstance(report, Mapping) else None
    r = results[0] if isinstance(results, list) and results and isinstance(results[0], Mapping) else {}
    if done.get("rc") not in (0, None) or not r.get("ok", False):
        return f"{done.get('task')}: refused or failed (rc {done.get('rc')}), keys untouched"
    if r.get("pre_reset_backup"):
        rows = f", {r['rows_deleted']} rows" if r.get("rows_deleted") is not None else ""
        return (f"keys deleted ({r.get('files_removed', 0)} files{rows}); "
                f"pre-reset backup {r['pre_reset_backup']} holds them")
    if r.get("pre_restore_backup"):
        return (f"session restored from backup {r.get('id')}; "
                f"pre-restore backup {r['pre_restore_backup']} holds the keys it replaced")
    if "pre_prune_backup" in r:
        return f"keys pruned; pre-prune backup {r.get('pre_prune_backup')} holds them"
    return f"{done.get('task')}: done"


def _cancel_why(res: RecoverResult) -> str:
    done = [d for s in res.steps for d in s.data.get("done", [])]
    return "cancelled by the operator; " + ("done before it stopped: " + "; ".join(done) if done
                                            else "no destructive step had started")


def _run_summary(run: RunResult) -> str:
    changed = sum(s.changed for s in run.stats.values())
    return f"{run.playbook}: {run.status}, {changed} change(s)"


# --- many bots ---------------------------------------------------------------------------------


def recover_fleet(inventory: str | Path, patterns: list[str], bot: str | None, opts: RecoverOptions, store: Any,
                  settings: Any, ui: UI, cancel: Cancel) -> list[RecoverResult]:
    """Recover every bot the patterns match, one after the other, until cancelled. A bot whose lock
    another run holds is reported (busy) and the next bot goes on."""
    results: list[RecoverResult] = []
    for host, target in targets(inventory, patterns or ["all"], bot, opts.pair_phone):
        if cancel.is_set():
            break
        deps = default_deps(host, target, inventory, store, settings)
        try:
            results.append(Recovery(target, opts, deps, ui, cancel).run())
        except WaopsError as exc:
            results.append(RecoverResult(target.host, target.bot, "failed", str(exc),
                                         busy=exc.exit_code == ExitCode.BUSY))
            ui.error(target, str(exc))
    return results


def fleet_exit_code(results: list[RecoverResult]) -> ExitCode:
    """Every bot busy: BUSY (try again later). Otherwise the most urgent of the bots' codes."""
    if results and all(r.busy for r in results):
        return ExitCode.BUSY
    codes = {ExitCode.PROBLEM if r.busy else r.exit_code for r in results}
    for code in (ExitCode.INTERRUPTED, ExitCode.UNREACHABLE, ExitCode.PROBLEM, ExitCode.NEEDS_HUMAN):
        if code in codes:
            return code
    return ExitCode.OK


# --- default edges ------------------------------------------------------------------------------


def playbook_runner(inventory: str | Path | None) -> RunStep:
    """Run a plan step's playbook with ansible-runner, limited to the target host."""

    def run(target: Target, step: Step, extravars: Mapping[str, Any], on_progress: Callable[[Progress], None],
            cancel: Cancel, timeout_s: int) -> RunResult:
        from waops.execute import run_playbook

        assert step.playbook
        # stop_duplicate reaches the hosts that run a copy of the device too.
        limit = ",".join(dict.fromkeys([target.host, *extravars.get("waops_copy_hosts", ())]))
        return run_playbook(step.playbook, inventory=inventory, limit=limit, extravars=extravars,
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
                phone=str(phone) if phone else None, roundtrip_command=h.extra.get(ROUNDTRIP_VAR),
                library_expected=b.library_expected,
                home_host=str(b.extra["home_host"]) if b.extra.get("home_host") else None,
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
                return BotState(b.diagnosis, b.facts or BotFacts(bot=bot))
        from waops.diagnose import Diagnosis

        return BotState(Diagnosis("unknown", None, [report.error or "no facts for this bot"], 0.1), BotFacts(bot=bot))

    return probe


def round_trip(target: Target) -> RoundTrip | None:
    """The inventory's round-trip hook for this bot (verify.command_round_trip), None when off."""
    from waops.verify import command_round_trip

    return command_round_trip(target.roundtrip_command, host=target.host, bot=target.bot, phone=target.phone)


def default_deps(host: Any, target: Target, inventory: str | Path, store: Any, settings: Any) -> Deps:
    from waops.hostlease import ssh_agent
    from waops.locking import BotLock
    rt = round_trip(target)
    agent = ssh_agent(host, max(30.0, float(settings.timeout)))
    return Deps(probe=host_probe(host, target.bot, settings), run_step=playbook_runner(inventory), store=store,
                round_trip=rt, lock=lambda: BotLock(target.host, target.bot),
                lease=lambda: HostLease(agent, target.bot),
                copies=fleet_copies(inventory, settings))


def fleet_copies(inventory: str | Path, settings: Any) -> Callable[[str], list[Any]]:
    """Probe every host of the inventory (in parallel) for running bots on the device `fp`."""

    def copies(fp: str) -> list[Any]:
        from waops.duplicates import Copy, fingerprint, running
        from waops.inventory import load
        from waops.probe import probe_hosts

        found = []
        for r in probe_hosts(load(inventory, ["all"]), settings):
            found += [Copy(r.host, b.bot) for b in r.bots if fingerprint(b.facts) == fp and running(b.facts)]
        return found

    return copies
