"""Provision bot hosts: playbooks/site.yml through ansible-runner, checked against the inventory first.

The inventory is read with waops.inventory before anything runs, so a malformed inventory or a pattern
that matches no host is a usage error, not a half-run play. The result is a per-host recap
(ok/changed/failed/unreachable) that the CLI prints and scripts read as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waops.errors import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE, UsageError

SITE_TIMEOUT_S = 3600  # a first converge on many hosts (npm ci, node) is slow; it still needs a deadline


@dataclass
class ProvisionResult:
    inventory: str
    hosts: list[str]
    check: bool
    run: Any  # waops.execute.RunResult

    @property
    def unreachable(self) -> list[str]:
        return sorted(h for h, s in self.run.stats.items() if s.unreachable)

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.run.stats.values())

    @property
    def exit_code(self) -> int:
        if self.unreachable:
            return EXIT_UNREACHABLE
        return EXIT_OK if self.run.ok else EXIT_PROBLEM

    def to_dict(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "hosts": self.hosts, "check": self.check, "ok": self.run.ok,
                "changed": self.changed, "unreachable": self.unreachable, **self.run.to_dict()}


def provision(
    inventory: str | Path,
    patterns: Sequence[str] = ("waops_bot_hosts",),
    *,
    check: bool = False,
    diff: bool = False,
    timeout_s: int = SITE_TIMEOUT_S,
    on_progress: Callable[[Any], None] | None = None,
) -> ProvisionResult:
    """Converge the hosts that match `patterns` with site.yml (or only report, with `check`)."""
    from waops import inventory as inventory_mod
    from waops.execute import run_playbook

    hosts = inventory_mod.load(inventory, patterns)  # UsageError on a malformed inventory or no match
    for host in hosts:
        if not host.bots:
            raise UsageError(f"host {host.name} has no waops_bots: nothing to provision (see inventories/example)")
    limit = ",".join(h.name for h in hosts)
    run = run_playbook("site.yml", inventory=inventory, limit=limit, check=check, diff=diff,
                       timeout_s=timeout_s, on_progress=on_progress)
    return ProvisionResult(inventory=str(inventory), hosts=[h.name for h in hosts], check=check, run=run)
