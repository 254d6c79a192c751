"""The real ansible-rulebook runs the collection's rulebook (waops.ops.waops_recover) with its event source
(waops.ops.waops_webhook): posts signed by the host check's own signing function trigger the recovery, and
forged, unsigned, stale and replayed posts are refused and trigger nothing; a second alert for the same bot
inside the throttle window triggers nothing either. The recover playbook is swapped for a tiny one that
writes down each run (the rulebook's `waops_eda_recover_playbook`), so only the engine's decision is tested.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from waops_host.alerts import sign_webhook

ROOT = Path(__file__).resolve().parents[2]
JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.secret = secrets.token_urlsafe(24)
        self.runs = tmp / "runs.log"
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "rulebook.log"

    def start(self) -> None:
        rulebook = shutil.which("ansible-rulebook")
        if not rulebook:
            pytest.fail("ansible-rulebook is not installed (.ci/install installs it with Java 17)")
        secret_file = self.tmp / "eda-webhook.json"
        secret_file.write_text(json.dumps({"webhook": {"secret": self.secret}}))
        secret_file.chmod(0o600)
        playbook = self.tmp / "recorded.yml"
        playbook.write_text(yaml.safe_dump([{
            "name": "Write down the recovery the rulebook asked for",
            "hosts": "all", "gather_facts": False,
            "tasks": [{"name": "Append the run", "ansible.builtin.lineinfile": {
                "path": str(self.runs), "create": True, "mode": "0600",
                "line": "{{ inventory_hostname }} {{ waops_bot }} {{ waops_trigger }} {{ waops_alert_condition }}"},
                "delegate_to": "localhost"}],
        }]))
        inventory = self.tmp / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": {
            "bot1.example.com": {"ansible_connection": "local"},
            "bot2.example.com": {"ansible_connection": "local"}}}}))
        variables = self.tmp / "vars.yml"
        variables.write_text(yaml.safe_dump({
            "waops_eda_port": self.port, "waops_eda_secret_file": str(secret_file),
            "waops_eda_recover_playbook": str(playbook)}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_PYTHON_INTERPRETER=shutil.which("python3") or "python3")
        if JAVA_17.is_dir():
            env["JAVA_HOME"] = str(JAVA_17)
        self.proc = subprocess.Popen(
            [rulebook, "--rulebook", "waops.ops.waops_recover", "-i", str(inventory), "--vars", str(variables),
             "-v"], cwd=self.tmp, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        pytest.fail("the rulebook's source never listened:\n" + self.log.read_text()[-4000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/waops", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    def recorded(self) -> list[str]:
        return self.runs.read_text().splitlines() if self.runs.exists() else []


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path)
    try:
        e.start()
        yield e
    finally:
        e.stop()


def _alert(host: str, bot: str, condition: str = "session_down") -> bytes:
    return json.dumps({"source": "waops", "version": 1, "id": secrets.token_hex(8), "event": "open",
                       "host": host, "bot": bot, "condition": condition, "severity": "critical",
                       "incident": secrets.token_hex(4), "started_at": "2026-12-01T03:00:00+00:00",
                       "at": "2026-12-01T03:10:00+00:00", "text": "session not open", "details": {}}).encode()


def test_only_posts_signed_by_the_check_trigger_the_recovery(engine: Engine) -> None:
    sign = sign_webhook  # the host check's own signing, as it signs its webhook posts

    forged = _alert("bot1.example.com", "forged")
    assert engine.post(forged, sign("not-the-secret", forged)) == 401
    unsigned = _alert("bot1.example.com", "unsigned")
    assert engine.post(unsigned, {"X-Waops-Secret": "guess"}) == 401
    stale = _alert("bot1.example.com", "stale")
    assert engine.post(stale, sign(engine.secret, stale, now=time.time() - 3600)) == 401
    signed = _alert("bot1.example.com", "shop")
    tampered = signed.replace(b'"shop"', b'"evil"')
    assert engine.post(tampered, sign(engine.secret, signed)) == 401

    headers = sign(engine.secret, signed)
    assert engine.post(signed, headers) == 200
    assert engine.post(signed, headers) == 401  # the same post again: a replay
    # a crash loop of another bot on another host: a recovery of its own
    other = _alert("bot2.example.com", "sales", "crash_loop")
    assert engine.post(other, sign(engine.secret, other)) == 200
    # the same bot alerting again inside the throttle window: no second recovery
    again = _alert("bot1.example.com", "shop")
    assert engine.post(again, sign(engine.secret, again)) == 200
    # a warning that needs no recovery (backup age) passes the source but matches no rule
    backup = _alert("bot1.example.com", "shop2", "backup_stale")
    assert engine.post(backup, sign(engine.secret, backup)) == 200

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(engine.recorded()) < 2:
        time.sleep(1)
    time.sleep(10)  # room for a wrong extra run to show up
    runs = sorted(engine.recorded())
    assert runs == ["bot1.example.com shop auto session_down", "bot2.example.com sales auto crash_loop"], (
        runs, engine.log.read_text()[-4000:])
    log = engine.log.read_text()
    assert engine.secret not in log
