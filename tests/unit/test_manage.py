"""waops.manage: an adopted bot moved into the managed layout as the same device, else rolled back; the
managed entry it writes; the inventory entry rewritten in place."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from waops.adoption import parse
from waops.errors import UsageError
from waops.manage import device_of, manage, managed_entry, record_managed
from waops.verify import BotState, VerifyResult

ADOPTED = {"name": "wa-service", "adopted": True, "phone": "15550100001",
           "service": {"manager": "pm2", "app": "baileys-whatsapp-service", "pm2_home": "/root/.pm2", "user": "root"},
           "workdir": "/root/baileys-whatsapp-service",
           "auth": {"folder": "/root/.baileys_auth_info",
                    "postgres": {"dsn": "{{ vault_pg }}", "table": "baileys_auth", "rows": "table"}}}
DEVICE = "15550100001:3@s.whatsapp.net"


@dataclass
class Run:
    rc: int = 0
    status: str = "successful"
    failures: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Host:
    """The host as the flow sees it: the layout the bot runs in, and how it comes up in the managed one."""

    def __init__(self, managed_opens: bool = True, relinked: bool = False, move_fails: bool = False) -> None:
        self.layout, self.ran = "adopted", []
        self.managed_opens, self.relinked, self.move_fails = managed_opens, relinked, move_fails

    def probe(self) -> BotState:
        device = "15550100001:9@s.whatsapp.net" if self.layout == "managed" and self.relinked else DEVICE
        auth = ({"store": "postgres", "db": {"creds": {"linked": True, "me_id": device}}} if self.layout == "adopted"
                else {"store": "files", "creds": {"linked": True, "me_id": device}})
        return BotState(diagnosis=None, facts={"bot": "wa-service", "auth": auth})

    def run(self, extravars: dict[str, Any]) -> Run:
        self.ran.append(extravars["waops_manage_action"])
        if extravars["waops_manage_action"] == "move":
            self.layout = "managed"
            return Run(2, "failed") if self.move_fails else Run()
        if extravars["waops_manage_action"] == "rollback":
            self.layout = "adopted"
        return Run()

    def verify(self, probe: Any, **_: Any) -> VerifyResult:
        ok = self.layout == "adopted" or self.managed_opens
        return VerifyResult(ok, "open" if ok else "connection waiting_link", 1.0, last=probe())


def go(h: Host) -> Any:
    entry = managed_entry("wa-service", parse("bot-1", ADOPTED), ADOPTED, version="abc123")
    return manage("bot-1", "wa-service", entry, probe=h.probe, run=h.run, round_trip=None, verify_timeout_s=5,
                  verify=h.verify)


def test_the_managed_entry_keeps_the_bot_and_names_its_working_copy() -> None:
    e = managed_entry("wa-service", parse("bot-1", ADOPTED), ADOPTED, version="abc123", store="sqlite")
    assert e == {"name": "wa-service", "phone": "15550100001", "entry": "index.js", "service_manager": "systemd",
                 "auth_store": "sqlite",
                 "source": {"type": "git", "url": "/root/baileys-whatsapp-service", "version": "abc123"}}
    with pytest.raises(UsageError):
        managed_entry("wa-service", parse("bot-1", ADOPTED), ADOPTED, version="")


def test_moved_and_committed_when_it_opens_as_the_same_device() -> None:
    h = Host()
    r = go(h)
    assert (r.outcome, r.exit_code, r.device, h.ran) == ("managed", 0, DEVICE, ["move", "commit"])


@pytest.mark.parametrize("host", [Host(managed_opens=False), Host(relinked=True), Host(move_fails=True)],
                         ids=["not_open", "new_device", "move_failed"])
def test_rolled_back_to_the_adopted_layout(host: Host) -> None:
    r = go(host)
    assert (r.outcome, r.exit_code, host.layout, host.ran) == ("rolled_back", 1, "adopted", ["move", "rollback"])


def test_an_unlinked_bot_is_not_moved() -> None:
    h = Host()
    h.probe = lambda: BotState(diagnosis=None, facts={"auth": {"store": "files", "creds": {"linked": False}}})  # type: ignore[method-assign]
    r = go(h)
    assert (r.outcome, h.ran) == ("failed", [])
    assert device_of(BotState(diagnosis=None, facts={})) is None


def test_the_inventory_entry_is_rewritten_in_place(tmp_path: Path) -> None:
    hv = tmp_path / "host_vars"
    hv.mkdir()
    text = ("# the runbook server\nwaops_bots:\n  - name: other  # keep me\n    phone: '1'\n"
            + textwrap.indent(yaml.safe_dump([ADOPTED], sort_keys=False), "  ")
            + "vault_pg: postgresql://u:p@db.example.com/x\n")
    (hv / "bot-1.yml").write_text(text)
    entry = managed_entry("wa-service", parse("bot-1", ADOPTED), ADOPTED, version="abc123")
    edit = record_managed(str(tmp_path), "bot-1", "wa-service", entry)
    assert edit.written, edit
    out = (hv / "bot-1.yml").read_text()
    assert "# the runbook server" in out and "# keep me" in out
    doc = yaml.safe_load(out)
    assert doc["waops_bots"][1] == entry and doc["waops_bots"][0]["name"] == "other"
    again = record_managed(str(tmp_path), "bot-1", "wa-service", entry)  # not adopted any more
    assert not again.written
