"""Self-healing with nobody typing: the real ansible-rulebook runs the collection's rulebook against a lab
host whose own check posts its alerts through the signed webhook. Each fault is made the way it happens
(the lab's injector: on the host, or in the simulator), the rulebook runs waops.ops.recover for that bot on
that host, the plan's repair runs under the default per-cause policy, the bot is verified healthy by
waops's own verify (a test message round trip included), and the incident is in the store with
`trigger: auto`. A logged-out bot (policy ask) gets its pairing code in the operator's Telegram (a stand-in
of the Bot API), the simulated phone links with exactly that code, and the incident closes.

The check runs from cron every 5 minutes on a real host; here it is run every few seconds by hand after the
fault until the recovery starts (fast detection is the keep-alive agent's job: a close, or a flood of
messages failing to decrypt, reported on its socket), so the test does not wait for cron. The engine is
restarted for each fault: its throttle lets one recovery per bot through every 10 minutes. Each case
starts from a quiet engine: an alert an earlier case left in the host's outbox (a stopped engine misses
it; the next check delivers it) runs its recovery to the end before the case counts incidents.
tests/bench/bench_eda.py uses the helpers below.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.test_provision_support import bot_running, health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

ROOT = Path(__file__).resolve().parents[2]
JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
PAIRING_CODE = re.compile(r"Pairing code: ([A-Z0-9-]{4,12})")
CODE_WITHIN_S = 60  # a logged-out bot's pairing code reaches the operator's Telegram this soon after the 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@dataclass
class TelegramStandIn:
    """The Telegram Bot API's sendMessage, as the operator's chat: it keeps what reaches the right bot token
    and chat (with the time it arrived). Listens on every address, so lab hosts reach it too."""

    token: str = field(default_factory=lambda: f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(24)}")
    chat_id: str = "-1001234567890"
    port: int = field(default_factory=_free_port)
    messages: list[tuple[float, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {}
                ok = self.path == f"/bot{standin.token}/sendMessage" and str(doc.get("chat_id")) == standin.chat_id
                if ok:
                    standin.messages.append((time.monotonic(), str(doc.get("text") or "")))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"ok": ok, "result": {"message_id": len(standin.messages)}}).encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def pairing_codes(self, since: float = 0.0) -> list[tuple[float, str]]:
        return [(t, m[1]) for t, text in self.messages if t >= since and (m := PAIRING_CODE.search(text))]


@dataclass
class Engine:
    """ansible-rulebook running waops.ops.waops_recover against a lab whose hosts post to it."""

    lab: Any
    tmp: Path
    port: int
    secret: str
    proc: subprocess.Popen | None = None
    telegram: TelegramStandIn | None = None

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
        """The engine and every playbook it started: ansible-runner runs them in sessions of their own, out
        of reach of the engine's process group, and one left running would record into the next case."""
        if self.proc and self.proc.poll() is None:
            for pid in _descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def provision_with_webhook(lab: Any, tmp: Path, telegram: TelegramStandIn | None = None) -> Engine:
    """site.yml on the lab with every host's check posting to an engine on the lab's gateway (and, given a
    Telegram stand-in, alerting the operator's chat there: the channel the recover asks on)."""
    engine = Engine(lab, tmp, _free_port(), secrets.token_urlsafe(24), telegram=telegram)
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for host in lab.hosts():
        settings: dict[str, Any] = {
            "waops_host_alert_webhook_url": f"http://{lab.network.gateway}:{engine.port}/waops",
            "waops_host_alert_webhook_secret": engine.secret,
            "waops_host_check_session_down_minutes": 0.05,  # 3 s: the test runs the check itself
        }
        if telegram is not None:
            settings.update(waops_host_alert_telegram_api=f"http://{lab.network.gateway}:{telegram.port}",
                            waops_host_alert_telegram_token=telegram.token,
                            waops_host_alert_telegram_chat_id=telegram.chat_id)
        (host_vars / f"{host.name}.yml").write_text(yaml.safe_dump(settings))
    site = run_site(lab.inventory_dir)
    assert site.rc == 0, site.tail()
    for host in lab.hosts():
        assert wait_until(lambda h=host: health(lab, h).get("connection") == "open", 90), health(lab, host)
    return engine


def inject_fault(lab: Any, host: Any, cause: str) -> None:
    """The lab's injector, as `waops lab fault` makes it (a Bad MAC flood as the matrix test makes it)."""
    from waops_lab.lab.faults import inject
    from waops_lab.sandbox.client import SimulatorClient

    if cause == "corrupt_keys":
        phone = next(b["phone"] for b in host.bots if b["name"] == "shop")
        SimulatorClient(lab.control_url).fault(phone, cause, burst=12)
    else:
        inject(lab, host.name, cause, "shop")


def _playbooks_running(engine: Engine) -> bool:
    """A recovery the engine started is still running (ansible-runner and its ansible-playbook)."""
    if engine.proc is None:
        return False
    for pid in _descendants(engine.proc.pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"ansible-playbook" in cmdline or b"ansible-runner" in cmdline:
                return True
    return False


def settle(engine: Engine, quiet_s: float = 10, timeout: float = 600) -> bool:
    """Until no recovery has run and no incident was added for quiet_s: what an earlier case left behind
    is done and counted before this case's fault. True when something ran."""
    deadline = time.monotonic() + timeout
    start = seen = len(engine.incidents())
    quiet_since, ran = time.monotonic(), False
    while time.monotonic() < deadline:
        count = len(engine.incidents())
        if _playbooks_running(engine) or count != seen:
            seen, quiet_since, ran = count, time.monotonic(), True
        elif time.monotonic() - quiet_since >= quiet_s:
            return ran or seen != start
        time.sleep(1)
    raise AssertionError(("the engine never went quiet", engine.log.read_text()[-6000:]))


def detect_until_recovery_starts(engine: Engine, host: Any, before: set[int], timeout: float = 360) -> bool:
    """Run the host's check as cron would (every few seconds here) until the rulebook's recovery has opened
    its incident: the check announces the alert once its condition has held long enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.lab.ssh(host, "waops-host check --bot shop >/dev/null 2>&1 || true", timeout=120)
        if any(i.id not in before for i in engine.incidents()):
            return True
        time.sleep(2)
    return False


def auto_recover_once(engine: Engine, host: Any, cause: str = "process_down",
                      on_open: Any = None) -> tuple[float, Any]:
    """Inject the fault, run the host's check as cron would, wait for the rulebook's recovery to close its
    incident; return the seconds from the fault to the bot verified healthy and the incident.
    `on_open(faulted_at)` runs once the recovery started (the phone's part for a reset)."""
    lab = engine.lab
    # A check run on the healthy bot first, as cron's would between two incidents: an earlier incident
    # clears, so this one is announced (the check announces an open incident only once). And the
    # scheduled backup a restore needs, taken now so the case does not depend on the clock.
    lab.ssh(host, "waops-host check --bot shop >/dev/null; waops-host backup --bot shop --reason manual >/dev/null",
            timeout=180)
    if settle(engine):
        # A late alert's recovery ran: the engine's throttle would now swallow this case's alert for ten
        # minutes. A fresh engine (the host's outbox is empty now) starts the case clean.
        engine.stop()
        engine.start()
        settle(engine)
    before = {i.id for i in engine.incidents()}
    faulted = time.monotonic()
    inject_fault(lab, host, cause)
    assert detect_until_recovery_starts(engine, host, before), (
        f"{cause}: no recovery started", engine.log.read_text()[-6000:])
    if on_open is not None:
        on_open(faulted)

    def closed() -> list[Any]:
        return [i for i in engine.incidents() if i.id not in before and i.outcome is not None]

    assert wait_until(lambda: bool(closed()), 900, interval=2), engine.log.read_text()[-6000:]
    seconds = time.monotonic() - faulted
    (inc,) = closed()
    return seconds, inc


# --- the lab: one pm2 host, provisioned once, its check posting to the engine and to "Telegram" --------


@dataclass
class EdaLab:
    lab: Any
    host: Any
    engine: Engine
    telegram: TelegramStandIn

    @property
    def phone(self) -> str:
        return next(b["phone"] for b in self.host.bots if b["name"] == "shop")

    @property
    def sim(self) -> Any:
        from waops_lab.sandbox.client import SimulatorClient

        return SimulatorClient(self.lab.control_url)


@pytest.fixture(scope="module")
def eda(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdaLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    lab = _lab("t-eda")
    telegram = TelegramStandIn()
    telegram.start()
    try:
        lab.up(1, ("pm2",), log=lambda _m: None)
        engine = provision_with_webhook(lab, tmp_path_factory.mktemp("eda"), telegram)
        r = EdaLab(lab, lab.hosts()[0], engine, telegram)
        # From here a QR or pairing code waits for the phone, as in real life: only the test's phone links.
        r.sim.set_auto_link(False)
        yield r
    finally:
        telegram.stop()
        lab.down(log=lambda _m: None)


def _recovered(r: EdaLab, cause: str, on_open: Any = None) -> Any:
    r.engine.start()
    try:
        seconds, inc = auto_recover_once(r.engine, r.host, cause, on_open)
    finally:
        r.engine.stop()
    print(f"{cause} -> {inc.outcome} with nobody typing: {seconds:.0f} s (incident MTTR {inc.mttr_s or 0:.0f} s, "
          f"steps {[s.name for s in inc.steps]})")
    assert r.engine.secret not in r.engine.log.read_text()
    assert r.telegram.token not in r.engine.log.read_text()
    return inc


# corrupt_keys: a Bad MAC flood keeps the connection open; the keep-alive agent counts the messages Baileys
# could not decrypt and reports the flood, and the host opens decrypt_flood (the rulebook's trigger).
AUTO_CAUSES = ["process_down", "crash", "library_mismatch", "conflict", "creds_lost", "corrupt_keys"]


# What the diagnosis may name for a fault at the moment the alert comes. A crash loop caught between two of
# pm2's restarts (or after pm2 gave up on it) reads as a restart or a stopped process: the plan's restart
# then fails its verify, and the rollback chain switches back to the previous release (rolled_back).
SEEN_AS = {"crash": ("crash", "restart_required", "process_down")}


@pytest.mark.parametrize("cause", AUTO_CAUSES)
def test_rulebook_repairs_with_nobody_typing(eda: EdaLab, cause: str) -> None:
    """Each cause the plan fixes without a phone, under the default policy (auto): the plan's repair runs,
    the bot is verified back (open for a whole window, a test message answered) and the incident records
    it with trigger auto and an MTTR."""
    inc = _recovered(eda, cause)
    assert inc.trigger == "auto" and inc.cause in SEEN_AS.get(cause, (cause,)), inc.to_dict()
    assert inc.host == eda.host.name
    assert inc.outcome in ("resolved", "rolled_back"), (inc.to_dict(), eda.engine.log.read_text()[-6000:])
    assert inc.mttr_s is not None and inc.mttr_s > 0
    assert inc.steps[-1].name in ("verify", "backup") and any(s.name == "verify" and s.result == "ok"
                                                               for s in inc.steps), inc.to_dict()
    assert bot_running(eda.lab, eda.host) and health(eda.lab, eda.host).get("connection") == "open"


def test_logged_out_bot_gets_its_pairing_code_on_telegram_and_the_phone_links(eda: EdaLab) -> None:
    """401 (policy ask): the recovery resets the session after a verified backup, the bot asks for a pairing
    code, the code reaches the operator's Telegram within a minute of the 401, the simulated phone types
    exactly that code (a wrong one links nothing), and the incident closes resolved with the person's wait
    kept out of the MTTR."""
    from waops_lab.sandbox.client import SimulatorError

    r = eda
    delivered: dict[str, Any] = {}

    def phone_links(faulted: float) -> None:
        assert wait_until(lambda: bool(r.telegram.pairing_codes(faulted)), 300, interval=1), (
            r.telegram.messages, r.engine.log.read_text()[-6000:])
        at, code = r.telegram.pairing_codes(faulted)[0]
        delivered.update(code=code, seconds=at - faulted)
        with pytest.raises(SimulatorError):
            r.sim.link(r.phone, code="ZZZZ-ZZZZ")
        r.sim.link(r.phone, code=code)

    inc = _recovered(r, "logged_out", phone_links)
    print(f"logged_out: pairing code on Telegram {delivered['seconds']:.0f} s after the 401")
    # The one timing the issue states as behaviour: the operator has the code within a minute of the 401.
    # Both ends are on this process's monotonic clock: the fault as injected, the code as it arrived.
    assert delivered["seconds"] < CODE_WITHIN_S, (delivered, r.engine.log.read_text()[-6000:])
    assert inc.trigger == "auto" and inc.cause == "logged_out" and inc.outcome == "resolved", (
        inc.to_dict(), r.engine.log.read_text()[-6000:])
    assert [s.name for s in inc.steps][:2] == ["reset_session", "verify"], inc.to_dict()
    assert inc.human_wait_s > 0 and inc.mttr_s is not None
    linked = [e for e in r.sim.events(r.phone) if e.get("type") == "linked" and e.get("method") == "code"]
    assert linked, r.sim.events(r.phone)[-10:]
    assert health(r.lab, r.host).get("connection") == "open"
    reset = json.loads(r.lab.ssh(r.host, "waops-host list --bot shop --json"))["results"][0]["backups"]
    assert any(b["reason"] == "pre-reset" and b["verified"] for b in reset), reset
