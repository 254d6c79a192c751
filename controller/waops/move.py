"""`waops move BOT --to HOST` as a service: move a bot's session to another host without a new QR.

Order (each step recorded in the incident store, cause `moved` or `host_lost`):
1. the old host answers: a verified backup there, then FENCE it (marker, stopped, units disabled; the
   units' fence condition keeps them from starting) before anything starts elsewhere; it does not
   answer: the fence waits for it (the inventory carries it in `waops_fenced_bots`, and the new host
   records itself as owner in the bot's restic repository, which the old host's start gate and check
   read);
2. provision the new host (site.yml limited to it, with the inventory as it will be after the move, and
   `waops_service_start=false`: the service is installed and enabled, never started, so the bot's first
   start is on the restored session and no QR is ever shown there); a host the bot once left is unfenced
   first (marker removed, units enabled, not started);
3. bring the backup over: copied from the old host, else fetched from the repository; verified there;
4. the new host claims the bot in the repository; restore the backup there and start the bot;
5. verify: session open, no QR, a test message round trip; on failure roll back (stop the new one,
   claim back, unfence and start the old one when it answers).
The hosts, playbooks and the clock come in through `MoveEdges`, so the flow is tested without hosts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from waops.errors import UsageError, WaopsError

MOVE_CAUSES = ("moved", "host_lost")  # incident causes of a move: planned, or the old host was gone


class MoveError(WaopsError):
    """A step of the move failed; the message says which and why."""


class MoveEdges(Protocol):
    def reachable(self, host: str) -> bool: ...

    def fenced(self, host: str, bot: str) -> bool:
        """The host holds a fence marker for the bot (it ran the bot once and gave it up)."""
        ...

    def agent(self, host: str, args: list[str], timeout_s: float) -> dict[str, Any]:
        """`waops-host ARGS --json` on the host: the first result; MoveError when it failed."""
        ...

    def copy_backup(self, src: str, dst: str, bot: str, backup_id: str) -> None: ...

    def playbook(self, name: str, host: str, inventory: Path, extravars: dict[str, Any], timeout_s: float) -> None:
        """Run playbooks/NAME limited to host; MoveError when it fails."""
        ...

    def verify(self, host: str, bot: str, timeout_s: float) -> tuple[bool, str]: ...


class Store(Protocol):
    def open(self, *, host: str, bot: str, cause: str, code: int | None, started_at: datetime,
             evidence: Any = ..., detected_at: datetime | None = None) -> int: ...

    def add_step(self, incident_id: int, *, name: str, started_at: datetime, ended_at: datetime | None,
                 result: str, detail: str = "") -> None: ...

    def close(self, incident_id: int, outcome: str, resolved_at: datetime | None = None, *,
              human_wait_s: float | None = None) -> None: ...


# --- the inventory change --------------------------------------------------------------------------


@dataclass
class InventoryDoc:
    """A YAML/JSON inventory file whose hosts carry their variables inline (the lab's, most small ones)."""

    path: Path
    doc: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> InventoryDoc:
        import yaml

        target = path / "hosts.yml" if path.is_dir() else path
        try:
            doc = yaml.safe_load(target.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"{target}: cannot read the inventory to change it: {e}") from None
        if not isinstance(doc, dict):
            raise UsageError(f"{target}: not a YAML inventory with inline host variables")
        return cls(target, doc)

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Every host's inline variables (the dicts themselves, so edits land in the document)."""
        out: dict[str, dict[str, Any]] = {}

        def walk(group: Any) -> None:
            if not isinstance(group, dict):
                return
            for name, hv in (group.get("hosts") or {}).items():
                if hv is None:
                    group["hosts"][name] = hv = {}
                out.setdefault(name, hv)
            for child in (group.get("children") or {}).values():
                walk(child)

        for top in self.doc.values():
            walk(top)
        return out

    def moved(self, bot: str, old: str, new: str) -> tuple[InventoryDoc, list[str]]:
        """The document after the move and the change in words."""
        after = InventoryDoc(self.path, copy.deepcopy(self.doc))
        hosts = after.hosts()
        if new not in hosts:
            raise UsageError(f"host {new!r} is not in the inventory: add it (address, user, key) first")
        src = hosts[old]
        entry = next((b for b in src.get("waops_bots") or [] if isinstance(b, dict) and b.get("name") == bot), None)
        if entry is None:
            raise UsageError(f"bot {bot!r} is not listed in {old}'s waops_bots")
        src["waops_bots"] = [b for b in src["waops_bots"] if b is not entry]
        fenced = [f for f in src.get("waops_fenced_bots") or [] if f.get("name") != bot]
        src["waops_fenced_bots"] = [*fenced, {"name": bot, "owner": new}]
        dst = hosts[new]
        moved_entry = dict(entry)
        if dst.get("waops_service_manager") and "service_manager" in moved_entry:
            moved_entry["service_manager"] = dst["waops_service_manager"]
        dst["waops_bots"] = [b for b in dst.get("waops_bots") or [] if b.get("name") != bot] + [moved_entry]
        dst["waops_fenced_bots"] = [f for f in dst.get("waops_fenced_bots") or [] if f.get("name") != bot]
        if not dst["waops_fenced_bots"]:
            del dst["waops_fenced_bots"]
        change = [f"{old}: waops_bots without {bot}; waops_fenced_bots += {{name: {bot}, owner: {new}}}",
                  f"{new}: waops_bots += {json.dumps(moved_entry, sort_keys=True)}"]
        return after, change

    def bot_host(self, bot: str) -> str:
        found = [h for h, hv in self.hosts().items()
                 if any(isinstance(b, dict) and b.get("name") == bot for b in hv.get("waops_bots") or [])]
        if len(found) != 1:
            raise UsageError(f"bot {bot!r} is listed on {len(found)} hosts ({', '.join(found) or 'none'}); need one")
        return found[0]

    def write(self, path: Path) -> None:
        """JSON is YAML: the file keeps its name (comments of a hand-written file are not kept)."""
        path.write_text(json.dumps(self.doc, indent=2) + "\n")
        path.chmod(0o600)


def staged_inventory(after: InventoryDoc, workdir: Path) -> Path:
    """A copy of the inventory directory as it will be, for provisioning the new host before the
    inventory itself changes (group_vars/host_vars linked, not copied)."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = after.path.parent
    for name in ("group_vars", "host_vars"):
        if (src / name).exists() and not (workdir / name).exists():
            (workdir / name).symlink_to((src / name).resolve())
    after.write(workdir / after.path.name)
    return workdir


# --- the move ------------------------------------------------------------------------------------------


@dataclass
class MoveResult:
    bot: str
    old: str
    new: str
    outcome: str  # resolved, rolled_back, failed
    cause: str
    why: str = ""
    backup_id: str | None = None
    source: str | None = None  # old-host or repository
    inventory_change: list[str] = field(default_factory=list)
    inventory_written: bool = False
    incident_id: int | None = None
    started_at: datetime | None = None
    resolved_at: datetime | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mttr_s(self) -> float | None:
        if self.started_at and self.resolved_at:
            return (self.resolved_at - self.started_at).total_seconds()
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"bot": self.bot, "from": self.old, "to": self.new, "outcome": self.outcome, "cause": self.cause,
                "why": self.why, "backup_id": self.backup_id, "source": self.source,
                "inventory_change": self.inventory_change, "inventory_written": self.inventory_written,
                "incident_id": self.incident_id, "mttr_s": self.mttr_s, "steps": self.steps}


@dataclass(frozen=True)
class MoveOptions:
    write_inventory: bool = False
    verify_timeout_s: float = 180
    playbook_timeout_s: float = 1200
    agent_timeout_s: float = 600


class Move:
    def __init__(self, inventory: Path, bot: str, new: str, opts: MoveOptions, edges: MoveEdges,
                 store: Store | None, workdir: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 status: Callable[[str], None] = lambda _t: None) -> None:
        self.inventory, self.bot, self.new, self.opts = inventory, bot, new, opts
        self.edges, self.store, self.workdir, self.clock, self.status = edges, store, workdir, clock, status
        self.incident: int | None = None

    def run(self) -> MoveResult:
        started = self.clock()
        doc = InventoryDoc.load(self.inventory)
        old = doc.bot_host(self.bot)
        if old == self.new:
            raise UsageError(f"{self.bot} already runs on {old}")
        after, change = doc.moved(self.bot, old, self.new)
        old_up = self.edges.reachable(old)
        res = MoveResult(self.bot, old, self.new, "failed", "moved" if old_up else "host_lost",
                         inventory_change=change, started_at=started)
        if self.store is not None:
            self.incident = self.store.open(host=self.new, bot=self.bot, cause=res.cause, code=None,
                                            started_at=started, detected_at=started,
                                            evidence=[f"move {self.bot} from {old} to {self.new}",
                                                      f"{old} {'answers' if old_up else 'does not answer'}"])
        res.incident_id = self.incident
        try:
            self._move(res, after, old_up)
        except WaopsError as e:
            res.why = str(e)
            self._rollback(res, old_up)
        except Exception as e:  # a bug half-way must not leave the bot fenced everywhere: roll back, then raise
            res.why = f"internal error: {type(e).__name__}: {e}"
            self._rollback(res, old_up)
            if self.store is not None and self.incident is not None:
                self.store.close(self.incident, res.outcome, res.resolved_at if res.outcome != "failed" else None)
            raise
        if res.outcome == "resolved" and self.opts.write_inventory:
            doc.path.with_name(doc.path.name + ".before-move").write_text(doc.path.read_text())
            after.write(doc.path)
            res.inventory_written = True
        if self.store is not None and self.incident is not None:
            self.store.close(self.incident, res.outcome, res.resolved_at if res.outcome != "failed" else None)
        return res

    def _step(self, res: MoveResult, name: str, fn: Callable[[], Any]) -> Any:
        self.status(name)
        t0 = self.clock()
        try:
            out = fn()
        except WaopsError as e:
            self._record(res, name, t0, "failed", str(e))
            raise
        # a verify answers (ok, why): its step fails with it
        failed = isinstance(out, tuple) and len(out) == 2 and out[0] is False
        self._record(res, name, t0, "failed" if failed else "ok", "" if out is None else str(out)[:300])
        return out

    def _record(self, res: MoveResult, name: str, t0: datetime, result: str, detail: str) -> None:
        t1 = self.clock()
        res.steps.append({"name": name, "result": result, "detail": detail, "seconds": (t1 - t0).total_seconds()})
        if self.store is not None and self.incident is not None:
            self.store.add_step(self.incident, name=name, started_at=t0, ended_at=t1, result=result, detail=detail)

    def _move(self, res: MoveResult, after: InventoryDoc, old_up: bool) -> None:
        e, o, bot, new = self.edges, self.opts, self.bot, self.new
        if old_up:
            r = self._step(res, f"backup on {res.old}", lambda: e.agent(
                res.old, ["backup", "--bot", bot, "--reason", "manual"], o.agent_timeout_s))
            if not r.get("verified"):
                raise MoveError(f"the backup on {res.old} did not verify")
            res.backup_id, res.source = r["id"], "old-host"
            self._step(res, f"fence {bot} on {res.old}", lambda: e.agent(
                res.old, ["fence", "--bot", bot, "--moved-to", new], o.agent_timeout_s))
        if e.fenced(new, bot):  # the bot comes back to a host it once left: lift that fence, start nothing
            self._step(res, f"lift the old fence of {bot} on {new}", lambda: e.agent(
                new, ["unfence", "--bot", bot], o.agent_timeout_s))
        inv = staged_inventory(after, self.workdir / "inventory")
        # installed and enabled, not started: a bot started before its session arrives shows a QR
        self._step(res, f"provision {new}", lambda: e.playbook("site.yml", new, inv, {"waops_service_start": False},
                                                               o.playbook_timeout_s))
        if old_up:
            bid = res.backup_id or ""
            self._step(res, f"copy {bid} from {res.old} to {new}", lambda: e.copy_backup(res.old, new, bot, bid))
            self._step(res, f"verify {bid} on {new}", lambda: e.agent(new, ["verify", "--bot", bot, bid],
                                                                      o.agent_timeout_s))
        else:
            r = self._step(res, f"fetch the newest verified copy from the repository to {new}", lambda: e.agent(
                new, ["offhost", "fetch", "--bot", bot], o.agent_timeout_s))
            if not r.get("verified"):
                raise MoveError(f"the copy fetched from the repository did not verify on {new}")
            res.backup_id, res.source = r["id"], "repository"
        try:  # the owner record is what fences an old host that was down; without a repository, only the inventory
            self._step(res, f"record {new} as the owner", lambda: e.agent(new, ["offhost", "claim", "--bot", bot],
                                                                          o.agent_timeout_s))
        except MoveError:
            if not old_up:
                raise
        self._step(res, f"restore {res.backup_id} on {new} and start", lambda: e.playbook(
            "restore_session.yml", new, inv, {"waops_bot": bot, "waops_backup_id": res.backup_id},
            o.playbook_timeout_s))
        ok, why = self._step(res, f"verify {bot} on {new}: open, no QR, test message",
                             lambda: e.verify(new, bot, o.verify_timeout_s))
        if not ok:
            raise MoveError(f"{bot} on {new} did not verify: {why}")
        res.outcome, res.resolved_at, res.why = "resolved", self.clock(), f"{bot} serves from {new}"

    def _rollback(self, res: MoveResult, old_up: bool) -> None:
        """Stop the new copy first (never two at once), then give the bot back to the old host."""
        e, o, bot = self.edges, self.opts, self.bot
        for name, host, args in (
            (f"fence {bot} on {self.new}", self.new, ["fence", "--bot", bot, "--moved-to", res.old]),
            (f"record {res.old} as the owner again", res.old, ["offhost", "claim", "--bot", bot]),
            (f"unfence and start {bot} on {res.old}", res.old, ["unfence", "--bot", bot, "--start"]),
        ):
            if host == res.old and not (old_up and e.reachable(res.old)):
                continue
            try:
                self._step(res, name, lambda h=host, a=args: e.agent(h, a, o.agent_timeout_s))
            except WaopsError:
                if host == res.old and args[0] == "unfence":
                    return  # the old host could not be started again: the move failed
        if old_up:
            ok, _why = self._step(res, f"verify {bot} on {res.old}",
                                  lambda: e.verify(res.old, bot, o.verify_timeout_s))
            if ok:
                res.outcome, res.resolved_at = "rolled_back", self.clock()


# --- default edges: SSH to the hosts, ansible-runner, the verify loop ------------------------------


class HostEdges:
    """The real hosts: the agent over SSH (waops.transport), playbooks by ansible-runner, verify by the
    same loop as `waops recover` (open, no QR, a test message when the inventory names the simulator)."""

    AGENT = "/usr/local/bin/waops-host"
    BACKUPS = "/var/backups/waops"
    ETC = "/etc/waops/bots"  # bot configs and fence markers (docs/CONTRACTS.md)

    def __init__(self, inventory: Path, settings: Any) -> None:
        self.inventory, self.settings = inventory, settings
        self._hosts: dict[str, Any] = {}

    def host(self, name: str, inventory: Path | None = None) -> Any:
        from waops.inventory import load

        if name not in self._hosts:
            found = load(inventory or self.inventory, [name])
            if not found:
                raise UsageError(f"host {name!r} is not in the inventory")
            self._hosts[name] = found[0]
        return self._hosts[name]

    def _run(self, host: str, command: str, timeout_s: float, stdin: bytes = b"") -> Any:
        from waops.errors import UnreachableError
        from waops.transport import for_host

        t = for_host(self.host(host), timeout_s)
        try:
            return t.run(command, stdin=stdin, timeout=timeout_s)
        except UnreachableError as e:
            raise MoveError(f"{host}: unreachable: {e}") from None
        finally:
            t.close()

    def reachable(self, host: str) -> bool:
        try:
            return self._run(host, "true", 15).exit_status == 0
        except MoveError:
            return False

    def fenced(self, host: str, bot: str) -> bool:
        import shlex

        r = self._run(host, f"test -e {shlex.quote(f'{self.ETC}/{bot}.fence')}", 30)
        return r.exit_status == 0

    def agent(self, host: str, args: list[str], timeout_s: float) -> dict[str, Any]:
        import shlex

        r = self._run(host, " ".join(shlex.quote(a) for a in [self.AGENT, *args, "--json"]), timeout_s)
        try:
            doc = json.loads(r.stdout)
            first = doc["results"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            first = {}
        if r.exit_status != 0:
            err = first.get("error") or r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise MoveError(f"{host}: waops-host {args[0]} failed (exit {r.exit_status}): "
                            f"{err if isinstance(err, str) else err[0]}"[:400])
        return first

    def copy_backup(self, src: str, dst: str, bot: str, backup_id: str) -> None:
        """root to root, one backup set (small: a session), through the controller."""
        import shlex

        d = shlex.quote(f"{self.BACKUPS}/{bot}")
        out = self._run(src, f"tar -C {d} -cf - -- {shlex.quote(backup_id)}", 300)
        if out.exit_status != 0:
            raise MoveError(f"{src}: reading backup {backup_id} failed: {out.stderr.decode()[-300:]}")
        r = self._run(dst, f"install -d -m 0700 {d} && tar -C {d} --no-same-owner -xf -", 300, stdin=out.stdout)
        if r.exit_status != 0:
            raise MoveError(f"{dst}: writing backup {backup_id} failed: {r.stderr.decode()[-300:]}")

    def playbook(self, name: str, host: str, inventory: Path, extravars: dict[str, Any], timeout_s: float) -> None:
        from waops.assets import asset_root
        from waops.execute import run_playbook

        run = run_playbook(asset_root() / "playbooks" / name, inventory=inventory, limit=host,
                           extravars=extravars, timeout_s=int(timeout_s))
        if not run.ok:
            why = "; ".join(f"{f.task}: {f.message}" for f in run.failures[:2]) or run.status
            raise MoveError(f"{name} on {host}: {why}"[:500])

    def verify(self, host: str, bot: str, timeout_s: float) -> tuple[bool, str]:
        from waops.inventory import load
        from waops.recover import host_probe
        from waops.verify import ROUNDTRIP_VAR, command_round_trip, wait_verified

        hosts = load(self.inventory, ["all"])
        phone = next((str(b.extra["phone"]) for h in hosts for b in h.bots
                      if b.name == bot and b.extra.get("phone")), None)  # the bot's entry, wherever it is now
        hook = next((h.extra.get(ROUNDTRIP_VAR) for h in hosts if h.name == host), None)
        rt = command_round_trip(hook, host=host, bot=bot, phone=phone)
        res = wait_verified(host_probe(self.host(host), bot, self.settings), timeout_s=timeout_s, host=host,
                            round_trip=rt, wait_for_link=False)
        if res.link_shown or (res.last is not None and res.last.link(host).pending):
            return False, "a QR or pairing code was shown: the session did not come over"
        return res.ok, res.detail
