"""waops.migrate's control flow: copy and switch, proven on the new store, else switched back."""

from __future__ import annotations

from dataclasses import dataclass, field
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
