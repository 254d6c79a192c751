"""Self-healing with nobody typing: the real ansible-rulebook runs the collection's rulebook, a lab bot's
process goes down, the host's own check raises its alert through the signed webhook, the rulebook runs
waops.ops.recover for that bot on that host, the bot is verified healthy again, and the incident is in
the store with `trigger: auto`.

The check runs from cron every 5 minutes on a real host; here it is run twice by hand right after the
fault (the first run sees the session down, the second opens the incident after the configured seconds),
so the test does not wait for cron.
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
from pathlib import Path

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


def test_rulebook_recovers_a_dead_process_with_nobody_typing(lab_factory, tmp_path: Path) -> None:
    rulebook = shutil.which("ansible-rulebook")
    if not rulebook:
        pytest.fail("ansible-rulebook is not installed (.ci/install installs it with Java 17)")
    lab = lab_factory("t-eda", 1, ("pm2",))
    (host,) = lab.hosts()
    port, secret = _free_port(), secrets.token_urlsafe(24)
    # The check posts to the engine on the lab's gateway (the controller's side of the bridge).
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{host.name}.yml").write_text(yaml.safe_dump({
        "waops_host_alert_webhook_url": f"http://{lab.network.gateway}:{port}/waops",
        "waops_host_alert_webhook_secret": secret,
        "waops_host_check_session_down_minutes": 0.05,  # 3 s: the test runs the check itself
    }))
    site = run_site(lab.inventory_dir)
    assert site.rc == 0, site.tail()
    assert wait_until(lambda: health(lab, host).get("connection") == "open", 90), health(lab, host)

    secret_file = tmp_path / "eda-webhook.json"
    secret_file.write_text(json.dumps({"webhook": {"secret": secret}}))
    secret_file.chmod(0o600)
    variables = tmp_path / "vars.yml"
    variables.write_text(yaml.safe_dump({"waops_eda_listen": "0.0.0.0", "waops_eda_port": port,
                                         "waops_eda_secret_file": str(secret_file)}))
    store = tmp_path / "incidents.db"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", WAOPS_STORE=str(store))
    if JAVA_17.is_dir():
        env["JAVA_HOME"] = str(JAVA_17)
    log = tmp_path / "rulebook.log"
    engine = subprocess.Popen([rulebook, "--rulebook", "waops.ops.waops_recover", "-i", str(lab.inventory_dir),
                               "--vars", str(variables), "-v"], cwd=ROOT, env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening() -> bool:
            assert engine.poll() is None, log.read_text()[-4000:]
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert wait_until(listening, 180), log.read_text()[-4000:]

        from waops.lab.faults import inject

        faulted = time.time()
        inject(lab, host.name, "process_down", "shop")
        assert wait_until(lambda: not bot_running(lab, host), 60)
        lab.ssh(host, "waops-host check --bot shop >/dev/null; sleep 5; waops-host check --bot shop >/dev/null",
                timeout=120)

        from waops.incidents import connect

        def recovered() -> bool:
            if not store.exists():
                return False
            with connect(str(store)) as s:
                done = [i for i in s.list(bot="shop") if i.outcome is not None]
            return bool(done)

        assert wait_until(recovered, 400, interval=3), log.read_text()[-6000:]
        with connect(str(store)) as s:
            (inc,) = s.list(bot="shop")
        assert inc.trigger == "auto" and inc.cause == "process_down" and inc.outcome == "resolved", (
            inc.to_dict(), log.read_text()[-6000:])
        assert inc.host == host.name and inc.mttr_s is not None
        assert bot_running(lab, host) and health(lab, host).get("connection") == "open"
        print(f"process_down -> verified healthy with nobody typing: {time.time() - faulted:.0f} s "
              f"(incident MTTR {inc.mttr_s:.0f} s)")
        assert secret not in log.read_text()
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGTERM)
            try:
                engine.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(engine.pid, signal.SIGKILL)
                engine.wait(30)
