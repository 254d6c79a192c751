"""Self-healing with nobody typing: the real ansible-rulebook runs the collection's rulebook, a lab bot's
process goes down, the host's own check raises its alert through the signed webhook, the rulebook runs
waops.ops.recover for that bot on that host, the bot is verified healthy again, and the incident is in
the store with `trigger: auto`.

The check runs from cron every 5 minutes on a real host; here it is run twice by hand right after the
fault (the first run sees the session down, the second opens the incident after the configured seconds),
so the test does not wait for cron. tests/bench/bench_eda.py uses the helpers below.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.test_provision_support import bot_running, health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

ROOT = Path(__file__).resolve().parents[2]
JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@dataclass
class Engine:
    """ansible-rulebook running waops.ops.waops_recover against a lab whose hosts post to it."""

    lab: Any
    tmp: Path
    port: int
    secret: str
    proc: subprocess.Popen | None = None

    @property
    def store(self) -> Path:
        return self.tmp / "incidents.db"

    @property
    def log(self) -> Path:
        return self.tmp / "rulebook.log"

    def start(self) -> None:
        rulebook = shutil.which("ansible-rulebook")
        if not rulebook:
            raise AssertionError("ansible-rulebook is not installed (.ci/install installs it with Java 17)")
        secret_file = self.tmp / "eda-webhook.json"
        secret_file.write_text(json.dumps({"webhook": {"secret": self.secret}}))
        secret_file.chmod(0o600)
        variables = self.tmp / "vars.yml"
        variables.write_text(yaml.safe_dump({"waops_eda_listen": "0.0.0.0", "waops_eda_port": self.port,
                                             "waops_eda_secret_file": str(secret_file)}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   WAOPS_STORE=str(self.store))
        if JAVA_17.is_dir():
            env["JAVA_HOME"] = str(JAVA_17)
        self.proc = subprocess.Popen(
            [rulebook, "--rulebook", "waops.ops.waops_recover", "-i", str(self.lab.inventory_dir),
             "--vars", str(variables), "-v"], cwd=ROOT, env=env, stdout=self.log.open("a"),
            stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-4000:]
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        assert wait_until(listening, 180), self.log.read_text()[-4000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def incidents(self, bot: str = "shop") -> list[Any]:
        from waops.incidents import connect

        if not self.store.exists():
            return []
        with connect(str(self.store)) as s:
            return s.list(bot=bot)


def provision_with_webhook(lab: Any, tmp: Path) -> Engine:
    """site.yml on the lab with every host's check posting to an engine on the lab's gateway."""
    engine = Engine(lab, tmp, _free_port(), secrets.token_urlsafe(24))
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for host in lab.hosts():
        (host_vars / f"{host.name}.yml").write_text(yaml.safe_dump({
            "waops_host_alert_webhook_url": f"http://{lab.network.gateway}:{engine.port}/waops",
            "waops_host_alert_webhook_secret": engine.secret,
            "waops_host_check_session_down_minutes": 0.05,  # 3 s: the test runs the check itself
        }))
    site = run_site(lab.inventory_dir)
    assert site.rc == 0, site.tail()
    for host in lab.hosts():
        assert wait_until(lambda h=host: health(lab, h).get("connection") == "open", 90), health(lab, host)
    return engine


def auto_recover_once(engine: Engine, host: Any, cause: str = "process_down") -> tuple[float, Any]:
    """Inject the fault, run the host's check as cron would, wait for the rulebook's recovery; return the
    seconds from the fault to the bot verified healthy (incident closed) and the incident."""
    from waops_lab.lab.faults import inject

    lab = engine.lab
    # A check run on the healthy bot first, as cron's would between two incidents: an earlier incident
    # clears, so this one is announced (the check announces an open incident only once).
    lab.ssh(host, "waops-host check --bot shop >/dev/null", timeout=120)
    before = {i.id for i in engine.incidents()}
    faulted = time.monotonic()
    inject(lab, host.name, cause, "shop")
    assert wait_until(lambda: not bot_running(lab, host), 60)
    lab.ssh(host, "waops-host check --bot shop >/dev/null; sleep 5; waops-host check --bot shop >/dev/null",
            timeout=120)

    def closed() -> list[Any]:
        return [i for i in engine.incidents() if i.id not in before and i.outcome is not None]

    assert wait_until(lambda: bool(closed()), 400, interval=2), engine.log.read_text()[-6000:]
    seconds = time.monotonic() - faulted
    (inc,) = closed()
    return seconds, inc


def test_rulebook_recovers_a_dead_process_with_nobody_typing(lab_factory, tmp_path: Path) -> None:
    lab = lab_factory("t-eda", 1, ("pm2",))
    (host,) = lab.hosts()
    engine = provision_with_webhook(lab, tmp_path)
    try:
        engine.start()
        seconds, inc = auto_recover_once(engine, host)
        assert inc.trigger == "auto" and inc.cause == "process_down" and inc.outcome == "resolved", (
            inc.to_dict(), engine.log.read_text()[-6000:])
        assert inc.host == host.name and inc.mttr_s is not None
        assert bot_running(lab, host) and health(lab, host).get("connection") == "open"
        print(f"process_down -> verified healthy with nobody typing: {seconds:.0f} s "
              f"(incident MTTR {inc.mttr_s:.0f} s)")
        assert engine.secret not in engine.log.read_text()
    finally:
        engine.stop()
