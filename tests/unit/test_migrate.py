"""waops.migrate's control flow: copy and switch, proven on the new store, else switched back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from waops.errors import UsageError
from waops.migrate import migrate
from waops.verify import BotState, VerifyResult


@dataclass
class Run:
    status: str = "successful"
    rc: int = 0
    failures: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Host:
    """A bot host as the flow sees it: its store (facts) and whether the bot opens on each store."""

    def __init__(self, store: str, opens_on: set[str], copy_fails: bool = False) -> None:
        self.store, self.opens_on, self.copy_fails, self.ran = store, opens_on, copy_fails, []

    def probe(self) -> BotState:
        return BotState(diagnosis=None, facts={"bot": "shop", "auth": {"store": self.store}})

    def run(self, extravars: dict[str, Any]) -> Run:
        self.ran.append(dict(extravars))
        if self.copy_fails and extravars.get("waops_migrate_copy", True):
            return Run("failed", 2)
        self.store = extravars["waops_store_to"]
        return Run()

    def verify(self, probe: Any, **_: Any) -> VerifyResult:
        state = probe()
        ok = self.store in self.opens_on
        return VerifyResult(ok, "open" if ok else "connection waiting_link", 1.0, last=state)


def go(h: Host, to: str) -> Any:
    return migrate("bot-1", "shop", to, probe=h.probe, run=h.run, round_trip=None, verify_timeout_s=5,
                   verify=h.verify)


def test_migrated_when_the_bot_opens_on_the_new_store() -> None:
    h = Host("files", {"files", "sqlite"})
    r = go(h, "sqlite")
    assert (r.outcome, r.source, r.exit_code) == ("migrated", "files", 0)
    assert h.ran == [{"waops_bot": "shop", "waops_store_to": "sqlite"}]


def test_switched_back_when_the_bot_does_not_open_on_the_new_store() -> None:
    h = Host("sqlite", {"sqlite"})
    r = go(h, "postgres")
    assert (r.outcome, r.exit_code, h.store) == ("rolled_back", 1, "sqlite")
    assert h.ran[1] == {"waops_bot": "shop", "waops_store_to": "sqlite", "waops_migrate_copy": False}
    assert "waiting_link" in r.why


def test_a_failed_copy_changes_nothing_more() -> None:
    h = Host("files", {"files"}, copy_fails=True)
    r = go(h, "sqlite")
    assert (r.outcome, len(h.ran), h.store) == ("failed", 1, "files")


def test_same_store_or_unknown_store_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        go(Host("files", {"files"}), "files")
    with pytest.raises(UsageError):
        go(Host("files", {"files"}), "redis")


# --- the inventory follows the migration ------------------------------------------------------------


def test_inventory_host_vars_get_the_new_store_with_comments_kept(tmp_path: Path) -> None:
    from waops.migrate import record_store

    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    waops_bot_hosts:\n      hosts:\n        bot1: {}\n")
    hv = tmp_path / "host_vars"
    hv.mkdir()
    text = ("# the shop's bots\nwaops_bots:\n  - name: shop   # the main number\n    phone: '15550100001'\n"
            "    auth_store: files\n  - name: crm\n    auth_store: files\n")
    (hv / "bot1.yml").write_text(text)
    (hv / "bot1.yml").chmod(0o640)
    edit = record_store(str(tmp_path), "bot1", "shop", "sqlite")
    assert edit.written and edit.path == str(hv / "bot1.yml"), edit
    after = (hv / "bot1.yml").read_text()
    assert after == text.replace("    auth_store: files\n  - name: crm", "    auth_store: sqlite\n  - name: crm")
    assert (hv / "bot1.yml").stat().st_mode & 0o777 == 0o640


def test_inventory_inline_host_vars_and_refusals(tmp_path: Path) -> None:
    from waops.migrate import record_store

    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    g:\n      hosts:\n        bot1:\n          waops_bots: [{name: shop}]\n")
    assert record_store(str(tmp_path), "bot1", "shop", "postgres").written
    assert "auth_store: postgres" in inv.read_text()
    # a bot the inventory does not list by name (a group default decides its store): the edit is printed
    edit = record_store(str(tmp_path), "bot1", "other", "sqlite")
    assert not edit.written and "auth_store: sqlite" in edit.edit and "host_vars/bot1.yml" in edit.edit
    # a vaulted file is never rewritten
    vaulted = tmp_path / "v"
    (vaulted / "host_vars").mkdir(parents=True)
    secret = "waops_bots: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6231\n"
    (vaulted / "host_vars" / "bot1.yml").write_text(secret)
    assert not record_store(str(vaulted), "bot1", "shop", "sqlite").written
    assert (vaulted / "host_vars" / "bot1.yml").read_text() == secret
