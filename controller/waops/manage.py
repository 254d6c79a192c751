"""Move an adopted bot into the managed layout: its own user, releases, a hardened systemd unit, the same
linked device (no new QR).

`playbooks/manage_adopted.yml` does the host side in three actions. `move`: a verified backup of the
adopted bot while it runs, its agent config kept aside (/etc/waops/adopted), the release deployed and the
unit installed but not started, the adopted service stopped, the session copied by the agent from the
adopted store into the managed one (a verified backup of the stopped bot first, the copy read back and
compared), the unit started. `commit`: the adopted service removed for good (pm2: deleted and the dump
saved; systemd: disabled). `rollback`: the managed unit stopped and disabled, the adopted config put
back, the adopted service started again on its own store, which the move only read.

Here: the device the bot is linked as is read first, the move runs, and the bot must be proven open on
the managed layout as the same device; then commit and the inventory entry is rewritten from adopted to
managed (waops.migrate's round-trip YAML edit); otherwise rollback, and the adopted bot must be open again.
Pure control flow over callables (probe, playbook run, verify), like waops.migrate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from waops.adoption import Adopted
from waops.errors import UsageError
from waops.migrate import STORES, InventoryEdit, edit_bot_entry, run_step
from waops.verify import BotState, Probe, RoundTrip, VerifyResult, wait_verified

PLAYBOOK = "manage_adopted.yml"
# What an adopted entry says that a managed one says too; the rest (service, workdir, auth, logs) is what
# the managed layout replaces.
KEPT_KEYS = ("phone", "library_package", "library_expected", "backup_keep", "alerts", "home_host", "pairing",
             "offhost_repository", "backup_age_recipient")

RunPlaybook = Callable[[Mapping[str, Any]], Any]  # extravars -> execute.RunResult


@dataclass
class ManageResult:
    host: str
    bot: str
    outcome: str  # managed | rolled_back | failed
    why: str = ""
    device: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "managed" else 1

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "bot": self.bot, "outcome": self.outcome, "why": self.why,
                "device": self.device, "steps": self.steps}


def managed_entry(name: str, adopted: Adopted, extra: Mapping[str, Any], *, version: str, store: str = "files",
                  entry: str = "index.js") -> dict[str, Any]:
    """The managed inventory entry of an adopted bot: its code from the working copy's commit `version`
    (a git source the host clones from the working copy), its own store, a systemd unit."""
    if store not in STORES:
        raise UsageError(f"--store must be one of {', '.join(STORES)}")
    if not version:
        raise UsageError(f"{name}: the working copy {adopted.workdir} records no commit (not a git working "
                         "copy?): give --version, a branch, tag or commit of it")
    out: dict[str, Any] = {"name": name}
    out.update({k: extra[k] for k in KEPT_KEYS if k in extra})
    out.update({"source": {"type": "git", "url": adopted.workdir, "version": version}, "entry": entry,
                "service_manager": "systemd", "auth_store": store})
    return out


def device_of(state: BotState) -> str | None:
    """The linked device (creds `me.id`, which a new QR changes) of the store the bot runs on."""
    auth = state.facts.auth
    if auth is None:
        return None
    creds = auth.db.creds if auth.in_database and auth.db else auth.creds
    return creds.me_id if creds is not None and creds.linked and creds.me_id else None


def release_of(state: BotState) -> str:
    """The commit the adopted working copy runs (the agent's `library.release`), or "" when unknown."""
    library = state.facts.library
    return library.release or "" if library is not None else ""


def manage(host: str, bot: str, entry: Mapping[str, Any], *, probe: Probe, run: RunPlaybook,
           round_trip: RoundTrip | None, verify_timeout_s: float,
           verify: Callable[..., VerifyResult] = wait_verified) -> ManageResult:
    res = ManageResult(host, bot, "failed")
    res.device = device_of(probe())
    if res.device is None:
        res.why = "the adopted bot's store holds no linked creds: nothing to carry over (link it first)"
        return res

    def step(name: str, action: str, **more: Any) -> bool:
        return run_step(res, run, name, {"waops_bot": bot, "waops_manage_action": action, **more})

    def proven(where: str) -> tuple[bool, str]:
        v = verify(probe, timeout_s=verify_timeout_s, host=host, round_trip=round_trip, wait_for_link=False)
        now = device_of(v.last) if v.last else None
        ok = v.ok and now == res.device
        detail = v.detail if not v.ok else v.detail if ok else f"linked as {now}, not {res.device}: a new device"
        res.steps.append({"name": f"verify {where}", "ok": ok, "detail": detail, "seconds": round(v.elapsed_s, 1)})
        return ok, detail

    if step("move into the managed layout", "move", waops_manage_entry=dict(entry)):
        ok, detail = proven("managed")
        if ok and step("remove the adopted service", "commit"):
            res.outcome, res.why = "managed", f"open in the managed layout as the same device ({detail})"
            return res
        why = res.why if ok else f"not working in the managed layout: {detail}"
    else:
        why = res.why
    if step("roll back to the adopted layout", "rollback") and proven("adopted")[0]:
        res.outcome, res.why = "rolled_back", f"{why}; back in the adopted layout, open"
    else:
        res.why = f"{why}; rolling back to the adopted layout failed too: {res.why}"
    return res


def record_managed(inventory: str, host: str, bot: str, entry: Mapping[str, Any]) -> InventoryEdit:
    """Replace the adopted entry `name: BOT` with the managed one in place (comments and layout around
    it kept), or say exactly what to edit."""
    want = (f"replace the entry `name: {bot}` of waops_bots in host_vars/{host}.yml (adopted: true) by the "
            f"managed entry {dict(entry)}")

    def change(found: Any) -> bool:
        if found.get("adopted") is not True:
            return False
        for key in list(found):
            del found[key]
        found.update(entry)
        return True

    return edit_bot_entry(inventory, host, bot, change, lambda got: dict(got) == dict(entry) and
                          got.get("adopted") is None, want, f"{bot}: adopted -> managed ({entry['auth_store']} "
                          f"store, systemd, source {entry['source']['url']}@{entry['source']['version']})")
