"""The move flow without hosts: scripted host answers (what the agent and the playbooks would report);
the inventory file and the incident store are real."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from waops.errors import UsageError
from waops.incidents import connect
from waops.move import Move, MoveError, MoveOptions


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=5)
        return self.t


class Hosts:
    """What each host answers; `down` hosts are unreachable, `verify` says how the bot looks after."""

    def __init__(self, down: tuple[str, ...] = (), verify: dict[str, bool] | None = None,
                 fenced: tuple[str, ...] = ()) -> None:
        self.down, self.verify_ok, self.fences = set(down), dict(verify or {}), set(fenced)
        self.calls: list[str] = []

    def reachable(self, host: str) -> bool:
        return host not in self.down

    def fenced(self, host: str, bot: str) -> bool:
        return host in self.fences

    def agent(self, host: str, args: list[str], timeout_s: float) -> dict[str, Any]:
        self.calls.append(f"{host}: {' '.join(args)}")
        if host in self.down:
            raise MoveError(f"{host}: unreachable")
        if args[0] == "backup":
            return {"bot": "shop", "ok": True, "id": "20261122T025900Z-manual-aaaaaa", "verified": True}
        if args[:2] == ["offhost", "fetch"]:
            return {"bot": "shop", "ok": True, "id": "20261122T000000Z-cron-bbbbbb", "verified": True}
        return {"bot": "shop", "ok": True}

    def copy_backup(self, src: str, dst: str, bot: str, backup_id: str) -> None:
        self.calls.append(f"copy {backup_id} {src}->{dst}")

    def playbook(self, name: str, host: str, inventory: Path, extravars: dict[str, Any], timeout_s: float) -> None:
        doc = yaml.safe_load((inventory / "hosts.yml").read_text())
        hosts = doc["all"]["children"]["waops_bot_hosts"]["hosts"]
        assert [b["name"] for b in hosts[host]["waops_bots"]] == ["shop"]  # provisioned as after the move
        self.calls.append(f"{host}: playbook {name} {json.dumps(extravars, sort_keys=True)}")

    def verify(self, host: str, bot: str, timeout_s: float) -> tuple[bool, str]:
        self.calls.append(f"{host}: verify")
        ok = self.verify_ok.get(host, True)
        return ok, "open, test message answered" if ok else "connection close"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_user": "root"},
        "children": {"waops_bot_hosts": {"hosts": {
            "bot-a": {"ansible_host": "192.0.2.10", "waops_bots": [{"name": "shop", "phone": "15550100001"}]},
            "bot-b": {"ansible_host": "192.0.2.11"},
        }}}}}))
    return inv


def run(inventory: Path, tmp_path: Path, hosts: Hosts, write: bool = False):
    with connect(tmp_path / "incidents.db") as st:
        res = Move(inventory, "shop", "bot-b", MoveOptions(write_inventory=write), hosts, st, tmp_path / "work",
                   clock=Clock()).run()
        inc = st.get(res.incident_id) if res.incident_id else None
    return res, inc


def test_planned_move_fences_the_old_host_before_anything_starts(inventory: Path, tmp_path: Path) -> None:
    hosts = Hosts()
    res, inc = run(inventory, tmp_path, hosts, write=True)
    assert res.outcome == "resolved" and res.cause == "moved" and res.source == "old-host"
    assert hosts.calls == [
        "bot-a: backup --bot shop --reason manual",
        "bot-a: fence --bot shop --moved-to bot-b",
        'bot-b: playbook site.yml {"waops_service_start": false}',
        "copy 20261122T025900Z-manual-aaaaaa bot-a->bot-b",
        "bot-b: verify --bot shop 20261122T025900Z-manual-aaaaaa",
        "bot-b: offhost claim --bot shop",
        'bot-b: playbook restore_session.yml '
        '{"waops_backup_id": "20261122T025900Z-manual-aaaaaa", "waops_bot": "shop"}',
        "bot-b: verify",
    ]
    assert inc is not None and inc.cause == "moved" and inc.outcome == "resolved" and inc.mttr_s == res.mttr_s
    assert [s.name for s in inc.steps][:2] == ["backup on bot-a", "fence shop on bot-a"]
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]["waops_bot_hosts"]["hosts"]
    assert doc["bot-a"]["waops_bots"] == []
    assert doc["bot-a"]["waops_fenced_bots"] == [{"name": "shop", "owner": "bot-b"}]
    assert doc["bot-b"]["waops_bots"] == [{"name": "shop", "phone": "15550100001"}]
    assert (inventory / "hosts.yml.before-move").exists()


def test_a_host_the_bot_once_left_is_unfenced_without_a_start_before_provisioning(inventory: Path,
                                                                                  tmp_path: Path) -> None:
    hosts = Hosts(fenced=("bot-b",))
    res, _inc = run(inventory, tmp_path, hosts)
    assert res.outcome == "resolved"
    assert hosts.calls[1:4] == ["bot-a: fence --bot shop --moved-to bot-b", "bot-b: unfence --bot shop",
                                'bot-b: playbook site.yml {"waops_service_start": false}']


def test_lost_host_brings_the_copy_from_the_repository(inventory: Path, tmp_path: Path) -> None:
    hosts = Hosts(down=("bot-a",))
    before = (inventory / "hosts.yml").read_text()
    res, inc = run(inventory, tmp_path, hosts)
    assert res.outcome == "resolved" and res.cause == "host_lost" and res.source == "repository"
    assert not any(c.startswith("bot-a") for c in hosts.calls)
    assert hosts.calls[1:3] == ["bot-b: offhost fetch --bot shop", "bot-b: offhost claim --bot shop"]
    assert inc is not None and inc.cause == "host_lost"
    # printed, not written: the inventory is the operator's until --write-inventory
    assert (inventory / "hosts.yml").read_text() == before
    assert res.inventory_change[0] == "bot-a: waops_bots without shop; waops_fenced_bots += {name: shop, owner: bot-b}"


def test_a_move_that_does_not_verify_rolls_back_to_the_old_host(inventory: Path, tmp_path: Path) -> None:
    hosts = Hosts(verify={"bot-b": False})
    before = (inventory / "hosts.yml").read_text()
    res, inc = run(inventory, tmp_path, hosts, write=True)
    assert res.outcome == "rolled_back" and "did not verify" in res.why
    assert hosts.calls[-4:] == ["bot-b: fence --bot shop --moved-to bot-a", "bot-a: offhost claim --bot shop",
                                "bot-a: unfence --bot shop --start", "bot-a: verify"]
    assert inc is not None and inc.outcome == "rolled_back"
    assert (inventory / "hosts.yml").read_text() == before


def test_lost_host_without_a_repository_copy_fails_and_stops_the_new_copy(inventory: Path, tmp_path: Path) -> None:
    class NoCopy(Hosts):
        def agent(self, host: str, args: list[str], timeout_s: float) -> dict[str, Any]:
            if args[:2] == ["offhost", "fetch"]:
                self.calls.append(f"{host}: {' '.join(args)}")
                raise MoveError("bot-b: waops-host offhost failed (exit 2): no offhost repository configured")
            return super().agent(host, args, timeout_s)

    hosts = NoCopy(down=("bot-a",))
    res, inc = run(inventory, tmp_path, hosts)
    assert res.outcome == "failed" and "no offhost repository" in res.why
    assert hosts.calls[-1] == "bot-b: fence --bot shop --moved-to bot-a"
    assert inc is not None and inc.outcome == "failed"


def test_bad_targets_are_usage_errors(inventory: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not in the inventory"):
        Move(inventory, "shop", "bot-z", MoveOptions(), Hosts(), None, tmp_path).run()
    with pytest.raises(UsageError, match="already runs on bot-a"):
        Move(inventory, "shop", "bot-a", MoveOptions(), Hosts(), None, tmp_path).run()
    with pytest.raises(UsageError, match="listed on 0 hosts"):
        Move(inventory, "crm", "bot-b", MoveOptions(), Hosts(), None, tmp_path).run()


def test_cli_reports_a_bad_target_as_a_usage_error(inventory: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "waops", "move", "shop", "--to", "bot-z", "-i", str(inventory),
                           "--store", str(tmp_path / "incidents.db")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not in the inventory" in proc.stderr, proc.stderr


def test_a_verify_that_fails_is_a_failed_step(inventory: Path, tmp_path: Path) -> None:
    _res, inc = run(inventory, tmp_path, Hosts(verify={"bot-b": False}))
    assert inc is not None
    results = {s.name: s.result for s in inc.steps}
    assert results["verify shop on bot-b: open, no QR, test message"] == "failed"
    assert results["verify shop on bot-a"] == "ok"
