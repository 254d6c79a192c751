"""A fleet drops at once: eight bots on four lab hosts (two per host, pm2 and systemd) lose their session
together, and the real ansible-rulebook running the collection's rulebook makes eight recoveries, one
per bot, never two on the same bot at the same time, and every bot ends healthy.

The fault is the one the recover playbook automates for every cause: the bot's process stopped, on all
eight at the same moment. Each host's own check raises the events (run by hand right after the fault, as
cron's every-minute quick run would, so the test does not wait for cron). A storm is then made worse on
purpose: every host posts a second, freshly signed "open" for each of its bots (a new id, as a check that
cleared and reopened would), while the first recoveries are still queued or running; the rulebook's
throttle per host and bot must drop them. No repeat means exactly one incident per bot in the store; no
overlap means no repair ever met another's lease (a run that did would close its incident as failed), and
the incident windows of a bot never intersect."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.test_eda_recover import Engine, _free_port
from tests.lab.test_provision_support import bot_running, health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

SECOND = "crm"  # each lab host's second bot, beside the lab's "shop"


def two_bots_per_host(lab: Any, engine: Engine) -> list[tuple[Any, str]]:
    """The lab's inventory and state with a second bot on every host, and every host's check posting to
    the engine; returns (host, bot) for all of them."""
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    state = json.loads(lab.state_file.read_text())
    for k, host in enumerate(lab.hosts()):
        base = host.bots[0]
        bots = [base, dict(base, name=SECOND, phone=base["phone"][:-2] + f"{60 + k:02d}")]
        (host_vars / f"{host.name}.yml").write_text(yaml.safe_dump({
            "waops_bots": [dict(b, service_manager=host.service_manager) for b in bots],
            "waops_host_alert_webhook_url": f"http://{lab.network.gateway}:{engine.port}/waops",
            "waops_host_alert_webhook_secret": engine.secret,
            "waops_host_check_session_down_minutes": 0.05,  # 3 s: the test runs the check itself
        }))
        state["hosts"][k]["bots"] = bots
    lab.state_file.write_text(json.dumps(state, indent=2))
    return [(h, b["name"]) for h in lab.hosts() for b in h.bots]


def all_at_once(jobs: list[Any]) -> None:
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def post_again(engine: Engine, host: str, bot: str) -> None:
    """A second signed "open" for the bot, with a new id: the repeat a flapping check would send."""
    from waops_host.alerts import sign_webhook

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"source": "waops", "version": 1, "id": secrets.token_hex(8), "event": "open", "host": host,
            "bot": bot, "condition": "session_down", "severity": "critical",
            "incident": f"{bot}-session_down-repeat", "started_at": now, "at": now, "text": "repeat",
            "details": {}}
    data = json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{engine.port}/waops", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **sign_webhook(engine.secret, data)})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_eight_bots_dropping_at_once_get_eight_throttled_recoveries(lab_factory, tmp_path: Path) -> None:
    from waops.incidents import connect
    from waops_lab.lab.faults import inject

    lab = lab_factory("t-storm", 4, ("pm2", "systemd"))
    engine = Engine(lab, tmp_path, _free_port(), secrets.token_urlsafe(24))
    fleet = two_bots_per_host(lab, engine)
    assert len(fleet) == 8
    site = run_site(lab.inventory_dir)
    assert site.rc == 0, site.tail()
    for host, bot in fleet:
        assert wait_until(lambda h=host, b=bot: health(lab, h, b).get("connection") == "open", 120), (host, bot)

    def store() -> list[Any]:
        if not engine.store.exists():
            return []
        with connect(str(engine.store)) as s:
            return s.list()

    try:
        engine.start()
        for host in lab.hosts():  # a healthy baseline run, as cron's between incidents
            lab.ssh(host, "waops-host check --quick >/dev/null", timeout=120)
        faulted = time.monotonic()
        all_at_once([lambda h=host, b=bot: inject(lab, h.name, "process_down", b) for host, bot in fleet])
        assert wait_until(lambda: not any(bot_running(lab, h, b) for h, b in fleet), 60)
        all_at_once([lambda h=host: lab.ssh(h, "waops-host check --quick >/dev/null; sleep 5; "
                                               "waops-host check --quick >/dev/null", timeout=180)
                     for host in lab.hosts()])
        for host, bot in fleet:  # the storm made worse: every bot's alert again, new id, same host and bot
            post_again(engine, host.name, bot)

        def closed() -> list[Any]:
            return [i for i in store() if i.outcome is not None]

        assert wait_until(lambda: len(closed()) >= len(fleet), 1500, interval=5), (
            [i.to_dict() for i in store()], engine.log.read_text()[-8000:])
        all_closed = time.monotonic() - faulted
        time.sleep(30)  # a late repeat would have started by now
        incidents = store()
        per_bot = {(i.host, i.bot): [j for j in incidents if (j.host, j.bot) == (i.host, i.bot)] for i in incidents}
        assert sorted(per_bot) == sorted((h.name, b) for h, b in fleet), [i.to_dict() for i in incidents]
        assert all(len(v) == 1 for v in per_bot.values()), [i.to_dict() for i in incidents]  # no repeat
        for inc in incidents:
            assert inc.trigger == "auto" and inc.cause == "process_down", inc.to_dict()
            assert inc.outcome == "resolved", (inc.to_dict(), engine.log.read_text()[-8000:])  # never met a lease
        for host, bot in fleet:
            assert bot_running(lab, host, bot) and health(lab, host, bot).get("connection") == "open", (host, bot)
        spans = sorted((i.detected_at, i.resolved_at) for i in incidents)
        overlapping = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
        mttr = sorted(i.mttr_s for i in incidents if i.mttr_s is not None)
        print(f"8 bots on 4 hosts down at once: 8 recoveries, all closed {all_closed:.0f} s after the fault; "
              f"MTTR min {mttr[0]:.0f} s, max {mttr[-1]:.0f} s; at most {overlapping} repairs at a time "
              f"(the rulebook runs its actions in order)")
        assert engine.secret not in engine.log.read_text()
    finally:
        engine.stop()
