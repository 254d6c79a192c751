"""Move one bot's session to another auth store (files, sqlite, postgres) without a new link.

`playbooks/migrate_store.yml` does the host side (bot stopped, a verified pre-migrate backup, the copy read
back and compared by the agent, the bot's env and agent config switched by the roles, bot started). Here:
the old store is read from facts, the playbook runs, and the bot must be proven working on the new store
with no link pending; otherwise the playbook runs again to switch back to the old store (left as it was).
Pure control flow over callables (probe, playbook run, verify), like waops.recover."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops.errors import UsageError
from waops.verify import BotState, Probe, RoundTrip, VerifyResult, wait_verified

STORES = ("files", "sqlite", "postgres")
PLAYBOOK = "migrate_store.yml"

RunPlaybook = Callable[[Mapping[str, Any]], Any]  # extravars -> execute.RunResult


@dataclass
class MigrateResult:
    host: str
    bot: str
    source: str | None
    to: str
    outcome: str  # migrated | rolled_back | failed
    why: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "migrated" else 1

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "bot": self.bot, "from": self.source, "to": self.to, "outcome": self.outcome,
                "why": self.why, "steps": self.steps}


def store_of(state: BotState) -> str | None:
    auth = state.facts.auth
    return auth.store if auth is not None and auth.store else None


def run_step(res: Any, run: Callable[[dict[str, Any]], Any], name: str, extravars: Mapping[str, Any]) -> bool:
    """One playbook run of a store move (`waops migrate`, `waops manage`): recorded in `res.steps`, and on
    failure its first messages become `res.why`."""
    out = run(dict(extravars))
    failures = [f.message for f in getattr(out, "failures", [])][:3]
    res.steps.append({"name": name, "ok": bool(out.ok), "status": out.status, "failures": failures})
    if not out.ok:
        res.why = f"{name}: " + ("; ".join(failures) or out.status)
    return bool(out.ok)


def migrate(host: str, bot: str, to: str, *, probe: Probe, run: RunPlaybook, round_trip: RoundTrip | None,
            verify_timeout_s: float, verify: Callable[..., VerifyResult] = wait_verified) -> MigrateResult:
    if to not in STORES:
        raise UsageError(f"--to must be one of {', '.join(STORES)}")
    source = store_of(probe())
    if source is None:
        return MigrateResult(host, bot, None, to, "failed", "facts name no auth store (bot not provisioned?)")
    if source == to:
        raise UsageError(f"{host}/{bot} already uses the {to} store")
    res = MigrateResult(host, bot, source, to, "failed")

    def step(name: str, extravars: Mapping[str, Any]) -> bool:
        return run_step(res, run, name, {"waops_bot": bot, **extravars})

    def proven(store: str) -> tuple[bool, str]:
        v = verify(probe, timeout_s=verify_timeout_s, host=host, round_trip=round_trip, wait_for_link=False)
        now = store_of(v.last) if v.last else None
        ok = v.ok and now == store
        detail = v.detail if not v.ok else f"facts name the {now} store, not {store}" if now != store else v.detail
        res.steps.append({"name": f"verify on {store}", "ok": ok, "detail": detail, "seconds": round(v.elapsed_s, 1)})
        return ok, detail

    if not step("copy and switch", {"waops_store_to": to}):
        return res  # the playbook started the bot again on its old store when the copy failed
    ok, detail = proven(to)
    if ok:
        res.outcome, res.why = "migrated", f"open on the {to} store with no new link ({detail})"
        return res
    why = f"not working on the {to} store: {detail}"
    if step("switch back", {"waops_store_to": source, "waops_migrate_copy": False}) and proven(source)[0]:
        res.outcome, res.why = "rolled_back", f"{why}; back on the {source} store"
    else:
        res.why = f"{why}; switching back to the {source} store failed too: {res.why}"
    return res


# --- the inventory follows ----------------------------------------------------------------------------
# site.yml writes what the inventory says: after a migration the bot's auth_store there must name the new
# store, or the next provisioning would switch the bot back to the old one (whose keys are now stale).


@dataclass
class InventoryEdit:
    written: bool
    path: str | None
    edit: str  # the change in words: what was written, or the exact edit a person makes

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "path": self.path, "edit": self.edit}


def record_store(inventory: str, host: str, bot: str, to: str) -> InventoryEdit:
    """Set `auth_store: TO` on BOT's entry in the plain YAML file that lists it (host_vars/HOST.yml first,
    then the inventory file itself), keeping the file's comments and layout; or say exactly what to edit."""
    want = f"set `auth_store: {to}` on the entry `name: {bot}` of waops_bots in host_vars/{host}.yml"
    adopted: list[str] = []

    def change(entry: Any) -> bool:
        if entry.get("adopted") is True:
            adopted.append(bot)
            return False
        entry["auth_store"] = to
        return True

    edit = edit_bot_entry(inventory, host, bot, change, lambda got: got.get("auth_store") == to, want,
                          f"auth_store: {to} on bot {bot}")
    if adopted:
        return InventoryEdit(False, edit.path, f"{bot} is adopted: its store is its own code's choice")
    return edit


def edit_bot_entry(inventory: str, host: str, bot: str, change: Callable[[Any], bool],
                   check: Callable[[Any], bool], want: str, done: str) -> InventoryEdit:
    """Apply `change` to BOT's entry in the plain YAML file that lists it (host_vars/HOST.yml first, then
    the inventory file itself) with round-trip YAML (comments and layout kept), check the written file
    with `check` before it replaces the old one; or return `want`, the edit a person makes. `change`
    returns False to leave the file alone."""
    inv = Path(inventory)
    files = ([inv / "host_vars" / f"{host}.{ext}" for ext in ("yml", "yaml")]
             + [inv / f"hosts.{ext}" for ext in ("yml", "yaml")]) if inv.is_dir() else [inv]
    try:
        from ruamel.yaml import YAML
    except ImportError:  # no round-trip YAML here: rewriting would drop the file's comments
        return InventoryEdit(False, None, want)
    for path in files:
        if not path.is_file():
            continue
        rt = YAML()
        rt.preserve_quotes = True
        rt.indent(mapping=2, sequence=4, offset=2)  # Ansible's usual layout: `  - name: shop`
        rt.width = 4096  # never re-wrap a long line
        try:
            doc = rt.load(path.read_text())
        except Exception:  # vault tags, templates ruamel cannot hold: a person edits it
            continue
        entry = _bot_entry(doc, host, bot, host_vars=path.parent.name == "host_vars")
        if entry is None:
            continue
        if not change(entry):
            return InventoryEdit(False, str(path), want)
        tmp = path.with_name(f".{path.name}.waops-tmp")
        with tmp.open("w") as f:
            rt.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        import yaml  # check the written file says what we meant before it replaces the old one

        got = _bot_entry(yaml.safe_load(tmp.read_text()), host, bot, host_vars=path.parent.name == "host_vars")
        if not got or not check(got):
            tmp.unlink()
            return InventoryEdit(False, str(path), want)
        os.replace(tmp, path)
        return InventoryEdit(True, str(path), f"{path}: {done}")
    return InventoryEdit(False, None, want)


def _bot_entry(doc: Any, host: str, bot: str, host_vars: bool) -> Any:
    if not isinstance(doc, dict):
        return None
    scopes = [doc] if host_vars else []
    if not host_vars:
        def walk(group: Any) -> None:
            if isinstance(group, dict):
                hv = (group.get("hosts") or {}).get(host) if isinstance(group.get("hosts"), dict) else None
                if isinstance(hv, dict):
                    scopes.append(hv)
                for child in (group.get("children") or {}).values() if isinstance(group.get("children"), dict) else []:
                    walk(child)

        for top in doc.values():
            walk(top)
    for hv in scopes:
        for b in hv.get("waops_bots") or []:
            if isinstance(b, dict) and b.get("name") == bot:
                return b
    return None
