"""The recover flow with the bot's repair lease held on its "host": the real agent run as a local
process against a temp bot (as it runs over SSH), the playbooks scripted as in test_recover."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_recover import Clock, Host, RecordingUI, broken, failed, healthy, ok, store  # noqa: F401

from waops.hostlease import HostLease
from waops.incidents import IncidentStore
from waops.locking import LockBusyError
from waops.recover import Deps, RecoverOptions, Recovery, Target
from waops.verify import wait_verified

AGENT = Path(__file__).resolve().parents[2] / "roles" / "waops_host" / "files" / "waops-host"
NOBODY = 65534  # the bot user of the tests' bots
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Any]:
    """An AgentCall running the repository's agent for one temp bot (files store, a linked session).
    The bot's folders are `nobody`'s in a directory that user can reach (the agent touches them only as
    the bot's user); config, backups and locks stay in root's tmp_path."""
    home = Path(tempfile.mkdtemp(prefix="waops-bot-"))
    home.chmod(0o711)
    auth = home / "state" / "auth"
    auth.mkdir(parents=True)
    (auth / "creds.json").write_text(
        json.dumps(
            {
                "me": {"id": "15550100001:3@s.whatsapp.net"},
                "account": {"details": "CAE="},
                "signedIdentityKey": {"public": {"type": "Buffer", "data": "QQ=="}},
            }
        )
    )
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "shop.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "name": "shop",
                "user": "nobody",
                "service_manager": "pm2",
                "auth_store": "files",
                "pm2_home": str(home / "pm2"),
                "release_root": str(home / "opt"),
                "auth_dir": str(auth),
                "health_file": str(home / "state" / "health.json"),
                "backup_dir": str(tmp_path / "backups"),
            }
        )
    )
    if os.geteuid() == 0:
        for path in [home / "state", *(home / "state").rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    common = ["--config-dir", str(tmp_path / "cfg"), "--lock-dir", str(tmp_path / "lock")]

    def call(argv: list[str]) -> tuple[int, dict[str, Any] | None, str]:
        p = subprocess.run(
            [PYTHON, str(AGENT), *argv, *common], capture_output=True, text=True, timeout=60, check=False
        )
        return p.returncode, json.loads(p.stdout) if p.stdout.startswith("{") else None, p.stderr

    call.backups = tmp_path / "backups"  # type: ignore[attr-defined]
    yield call
    shutil.rmtree(home, ignore_errors=True)


def recovery(host: Host, store: IncidentStore, agent: Any, owner: str) -> Recovery:  # noqa: F811
    fast = functools.partial(wait_verified, interval_s=0, settle_s=0, sleep=lambda _s: None)
    deps = Deps(
        probe=host.probe,
        run_step=host.run_step,
        store=store,
        now=Clock().now,
        verify=fast,
        lease=lambda: HostLease(agent, "shop", owner, ttl_s=60, renew_every_s=0.2),
    )
    return Recovery(Target("bot-1", "shop", phone="15550100001"), RecoverOptions(yes=True), deps, RecordingUI())


def test_a_second_controller_stops_with_75_naming_the_holder(store: IncidentStore, agent: Any) -> None:  # noqa: F811
    seen: list[str] = []
    second_done = threading.Event()

    class SlowHost(Host):
        def run_step(self, *a: Any, **kw: Any) -> Any:
            # The first controller is mid-reset when the second one starts.
            second = Host([broken("logged_out", 401), healthy()])
            try:
                recovery(second, store, agent, "bob@desk:2").run()
            except LockBusyError as exc:
                seen.append(str(exc))
                assert exc.exit_code == 75 and second.ran == [] and second.probes == 0
            second_done.set()
            return super().run_step(*a, **kw)

    first = SlowHost([broken("logged_out", 401), healthy()])
    r = recovery(first, store, agent, "alice@laptop:1").run()
    assert second_done.is_set() and len(seen) == 1
    assert "another repair is running on" in seen[0] and "owner alice@laptop:1 since" in seen[0]
    assert r.outcome == "resolved" and [p for p, _ in first.ran] == ["reset_session.yml"]
    assert first.ran[0][1]["waops_repair_owner"] == "alice@laptop:1"
    assert len(store.list()) == 1  # one incident: the second controller opened none
    # the lease ended with the repair: the next one may begin
    assert agent(["repair", "begin", "--bot", "shop", "--owner", "carol:3", "--json"])[0] == 0


def test_a_verified_relink_is_backed_up_at_once(store: IncidentStore, agent: Any) -> None:  # noqa: F811
    r = recovery(Host([broken("logged_out", 401), healthy()]), store, agent, "alice:1").run()
    assert r.outcome == "resolved"
    backup = next(s for s in r.steps if s.name == "backup")
    assert backup.result == "ok" and "verified" in backup.detail
    names = sorted(p.name for p in agent.backups.iterdir())
    assert len(names) == 1 and "-post-repair-" in names[0]


def test_a_failed_reset_is_failed_with_its_reason_not_a_task_for_a_person(
    store: IncidentStore,  # noqa: F811
    agent: Any,
) -> None:
    why = "shop: reset refused or failed, keys untouched, bot started again: PostgreSQL 192.0.2.1:5432: refused"
    host = Host([broken("logged_out", 401)], {"reset_session.yml": [failed("reset_session.yml", why)]})
    r = recovery(host, store, agent, "alice:1").run()
    assert r.outcome == "failed" and "PostgreSQL 192.0.2.1:5432" in r.why
    assert not agent.backups.exists()  # nothing verified, nothing backed up after
