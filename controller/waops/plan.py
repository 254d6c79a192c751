"""Diagnosis -> Plan: the decision table (docs/ARCHITECTURE.md) as data, and pure functions over it.

A plan has the first fix (`steps`) and an ordered `rollback_chain`: stages tried one after the other
when the stage before did not bring the bot back. Every playbook step names a file in playbooks/ and
the extra vars it takes; every playbook takes `waops_bot` (the bot's name) and runs with `--limit HOST`.
Nothing here touches a host: `recover` executes the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from waops.model import CAUSES

StepKind = Literal["playbook", "verify", "escalate", "alert"]
# What a plan means before anything runs: fix it, nothing to do, or only a person can act.
Intent = Literal["fix", "nothing_to_do", "needs_human"]


class DiagnosisLike(Protocol):
    """What the planner reads from a diagnosis (waops.diagnose.Diagnosis has these attributes)."""

    cause: str
    code: int | None
    evidence: list[str]
    confidence: float


@dataclass(frozen=True)
class Step:
    name: str
    kind: StepKind
    description: str
    playbook: str | None = None  # file name under playbooks/ when kind == "playbook"
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    # Destructive: changes the session; needs a verified backup first (the agent makes and verifies
    # it before it deletes anything) and, without --yes, the operator's confirmation.
    destructive: bool = False
    # A person must act for this step to finish: scan a QR code or type a pairing code.
    needs_human: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "playbook": self.playbook, "extra_vars": dict(self.extra_vars),
            "destructive": self.destructive, "needs_human": self.needs_human,
        }  # fmt: skip


@dataclass(frozen=True)
class Plan:
    cause: str
    code: int | None
    intent: Intent
    why: str
    steps: tuple[Step, ...] = ()
    rollback_chain: tuple[tuple[Step, ...], ...] = ()
    # When a stage's verify fails and the diagnosis is still this plan's cause, the fallbacks are no
    # answer to it (a duplicate that still runs): a person must act instead.
    stop_when_unchanged: bool = False

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def destructive(self) -> bool:
        """True when any step, first fix or fallback, may need the operator's confirmation."""
        return any(s.destructive for s in self.all_steps())

    @property
    def needs_human(self) -> bool:
        return any(s.needs_human for s in self.all_steps())

    def all_steps(self) -> list[Step]:
        return [*self.steps, *(s for stage in self.rollback_chain for s in stage)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause, "code": self.code, "intent": self.intent, "why": self.why,
            "steps": [s.to_dict() for s in self.steps],
            "rollback_chain": [[s.to_dict() for s in stage] for stage in self.rollback_chain],
        }  # fmt: skip


@dataclass(frozen=True)
class PlanOptions:
    """What the planner may know beyond the diagnosis (from facts and inventory); all optional."""

    pairing: Literal["qr", "code"] = "qr"
    has_previous_release: bool = True
    known_good_version: str | None = None  # the library version to pin for client_outdated
    verify_timeout_s: int = 120
    link_timeout_s: int = 600  # how long to wait for a person to scan or type the code
    network_backoff_s: int = 30
    # Below this a corrupt_keys diagnosis (a few decryption errors, no flood) is reported, not acted on:
    # dropping sessions for a handful of Bad MAC lines does more harm than the lines.
    corrupt_keys_min_confidence: float = 0.6
    # When the failure began (the incident's started_at, ISO 8601 UTC): a restore for a conflict takes a
    # backup from before it, since backups taken while two sockets wrote the keys hold damaged keys.
    started_at: str | None = None
    # Other hosts that run the same linked device (waops.duplicates), and which host the inventory says
    # owns the bot (None: not said).
    copy_hosts: tuple[str, ...] = ()
    home_host: str | None = None
    host: str | None = None  # the host being repaired


# --- step builders (each returns a fresh Step; vars are the playbooks' interface) ---------------


def _vars(bot: str, **extra: Any) -> dict[str, Any]:
    return {"waops_bot": bot, **{k: v for k, v in extra.items() if v is not None}}


def restart(bot: str, **extra: Any) -> Step:
    return Step("restart", "playbook", "restart the bot's service", "restart.yml", _vars(bot, **extra))


def rollback_release(bot: str) -> Step:
    return Step(
        "rollback_release", "playbook",
        "switch `current` back to the previous release (checks its library version) and restart",
        "rollback_release.yml", _vars(bot),
    )  # fmt: skip


def pin_library(bot: str, version: str | None) -> Step:
    return Step(
        "pin_library", "playbook", "upgrade or pin the library to a known-good version and restart",
        "pin_library.yml", _vars(bot, waops_library_version=version),
    )  # fmt: skip


def restore_session(bot: str, before: str | None = None) -> Step:
    if before:
        return Step(
            "restore_session", "playbook", f"restore the newest verified backup taken before {before} and restart",
            "restore_session.yml", _vars(bot, waops_backup_id="latest-verified", waops_backup_before=before),
            destructive=True,
        )  # fmt: skip
    return Step(
        "restore_session", "playbook", "restore the newest verified backup of the session and restart",
        "restore_session.yml", _vars(bot, waops_backup_id="latest-verified"), destructive=True,
    )  # fmt: skip


def prune_keys(bot: str, what: Literal["broken_sessions", "stale"]) -> Step:
    text = {
        "broken_sessions": "back up, then drop the broken signal sessions",
        "stale": "back up, then prune stale pre-key and sender-key files",
    }[what]
    return Step(
        "prune_keys", "playbook", text, "prune_keys.yml", _vars(bot, waops_prune=what), destructive=True
    )


def reset_session(bot: str, pairing: str) -> Step:
    # A reset ends with a new link: someone has to scan the QR or type the pairing code.
    return Step(
        "reset_session", "playbook",
        f"back up, reset the session and show a new {'QR code' if pairing == 'qr' else 'pairing code'}",
        "reset_session.yml", _vars(bot, waops_pairing=pairing), destructive=True, needs_human=True,
    )  # fmt: skip


def stop_duplicate(bot: str, copy_hosts: tuple[str, ...] = ()) -> Step:
    if copy_hosts:
        return Step(
            "stop_duplicate", "playbook",
            f"stop the copy of the bot on {', '.join(copy_hosts)} (same device, not its home) and any extra "
            "instance here", "stop_duplicate.yml", _vars(bot, waops_copy_hosts=list(copy_hosts)),
        )  # fmt: skip
    return Step(
        "stop_duplicate", "playbook", "find and stop the duplicate socket (extra instance, second host)",
        "stop_duplicate.yml", _vars(bot),
    )  # fmt: skip


def verify(bot: str, timeout_s: int, *, wait_for_link: bool = False, fixing: str | None = None) -> Step:
    """`fixing`: the cause the stage is aimed at; when the diagnosis settles on another cause with its
    own fix, the verify stops waiting (waops.verify)."""
    text = "wait for `open` and a test message round trip"
    if wait_for_link:
        text = "wait for the new link (scan or code), then `open` and a test message round trip"
    extra: dict[str, Any] = {"waops_bot": bot, "timeout_s": timeout_s, "wait_for_link": wait_for_link}
    if fixing:
        extra["fixing"] = fixing
    return Step("verify", "verify", text, extra_vars=extra, needs_human=wait_for_link)


# escalate/alert hand the incident to a person; they do not wait for one, so needs_human stays False.
def escalate(why: str) -> Step:
    return Step("escalate", "escalate", why)


def alert(why: str) -> Step:
    return Step("alert", "alert", why)


# --- the table -----------------------------------------------------------------------------------

_HUMAN_ONLY = {
    "banned": "the number is banned or blocked (403/406, 402 temporary): changing the session cannot "
    "fix it and may make it worse; a person must contact WhatsApp or wait",
    "rate_limited": "WhatsApp is rate limiting this number (429): changing nothing is the fix; "
    "a person decides whether to wait or reduce traffic",
}


# What an unattended engine (the Event-Driven Ansible rulebook) may do with a plan: run it (auto), wait for
# an operator's go (ask: a QR scan or pairing code needs the phone anyway), or only alert (never). The
# inventory's waops_recover_policy overrides it per cause.
POLICIES: tuple[str, ...] = ("auto", "ask", "never")


def default_policy(plan: Plan) -> str:
    """auto when the first fix needs nobody (restart, restore, prune, stop duplicate, rollback, pin), ask
    when it needs the phone (the reset), never when only a person can act (banned, rate limited) or there is
    nothing to do. A relink at the end of a rollback chain is asked for when that stage comes."""
    if plan.intent != "fix":
        return "never"
    return "ask" if any(s.needs_human for s in plan.steps) else "auto"


def make_plan(diagnosis: DiagnosisLike, bot: str, options: PlanOptions | None = None) -> Plan:
    """The smallest fix that works for this diagnosis, and what to try when it does not."""
    o = options or PlanOptions()
    cause = diagnosis.cause if diagnosis.cause in CAUSES else "unknown"
    code = diagnosis.code
    ok = verify(bot, o.verify_timeout_s, fixing=cause)
    relink = (reset_session(bot, o.pairing), verify(bot, o.link_timeout_s, wait_for_link=True))

    def fix(why: str, steps: tuple[Step, ...], *fallbacks: tuple[Step, ...], stop_when_unchanged: bool = False
            ) -> Plan:
        # Every chain ends with a person: when the last fallback fails, nothing automatic is left.
        chain = (*fallbacks, (escalate(f"{cause}: every automatic fix failed"),))
        return Plan(cause, code, "fix", why, steps, chain, stop_when_unchanged)

    if cause == "healthy":
        return Plan(cause, code, "nothing_to_do", "the bot is healthy: nothing to do")
    if cause in _HUMAN_ONLY:
        why = _HUMAN_ONLY[cause] + (f" (code {code})" if code is not None else "")
        return Plan(cause, code, "needs_human", why, (alert(why),))
    if cause in ("process_down", "restart_required"):
        return fix("restart the service", (restart(bot), ok), (rollback_release(bot), ok))
    if cause == "library_mismatch":
        # One answer (README): back to the newest previous release that holds a good version (the
        # playbook skips known-bad ones); without one, pin a known-good version in a new release.
        pin = (pin_library(bot, o.known_good_version), ok)
        if not o.has_previous_release:
            return fix("no previous release to switch back to: pin a known-good library version", pin)
        return fix("switch back to the previous release with a good library version, else pin one",
                   (rollback_release(bot), ok), pin)
    if cause == "crash":
        if not o.has_previous_release:
            # Nothing to switch back to: a restart is the only safe automatic step left.
            return fix("no previous release to switch back to: restart once", (restart(bot), ok))
        return fix("switch back to the previous release", (rollback_release(bot), ok))
    if cause == "client_outdated":
        return fix(
            "the library is too old for WhatsApp (405): pin a known-good version",
            (pin_library(bot, o.known_good_version), ok),
        )
    if cause == "creds_lost":
        return fix("creds are missing or unreadable: restore the newest verified backup",
                   (restore_session(bot), ok), relink)  # fmt: skip
    if cause == "corrupt_keys" and diagnosis.confidence < o.corrupt_keys_min_confidence:
        why = (f"a few decryption errors (confidence {diagnosis.confidence:.2f} < "
               f"{o.corrupt_keys_min_confidence}): watch for a flood before dropping sessions")
        return Plan(cause, code, "needs_human", why, (alert(why),))
    if cause == "corrupt_keys":
        return fix(
            "broken signal sessions (Bad MAC): drop them and restart",
            (prune_keys(bot, "broken_sessions"), restart(bot), ok),
            (restore_session(bot), ok),
            relink,
        )
    if cause == "logged_out":
        # A backup cannot undo a 401: the server revoked the device. Only a new link helps.
        return fix("the server logged the device out: reset and relink", relink)
    if cause == "conflict" and o.copy_hosts and (o.home_host is None or o.home_host != o.host):
        where = ", ".join((o.host or "this host", *o.copy_hosts))
        why = (f"the same linked device runs on {where}, and the inventory names no other home for the bot "
               "(home_host): a person decides which copy stays" if o.home_host is None else
               f"the same linked device runs on {where}; the bot's home is {o.home_host}: stop this copy there")
        return Plan(cause, code, "needs_human", why, (escalate(why),))
    if cause == "conflict":
        # Two sockets that wrote the same keys leave a broken ratchet (Bad MAC) once the duplicate is gone:
        # prune the broken sessions, then restore from before the duplicate started, then relink. While
        # the conflict itself persists, none of that helps: a person finds the copy.
        keys = verify(bot, o.verify_timeout_s, fixing="corrupt_keys")
        return fix("another socket uses these credentials (440): stop the duplicate",
                   (stop_duplicate(bot, o.copy_hosts), ok),
                   (prune_keys(bot, "broken_sessions"), restart(bot), keys),
                   (restore_session(bot, before=o.started_at), keys),
                   relink, stop_when_unchanged=True)  # fmt: skip
    if cause == "network":
        # Never touch the session for a network fault.
        step = restart(bot, waops_check_reachability=True, waops_backoff_s=o.network_backoff_s)
        return fix("network fault: check reachability, back off, restart", (step, ok))
    if cause == "file_bloat":
        return fix("too many key files: prune stale pre-keys and sender-keys",
                   (prune_keys(bot, "stale"), restart(bot), ok), relink)  # fmt: skip
    why = "the cause is unknown: a person must look" + (f" (code {code})" if code is not None else "")
    return Plan("unknown", code, "needs_human", why, (escalate(why),))
