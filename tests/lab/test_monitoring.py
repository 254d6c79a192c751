"""The monitoring content against a real Prometheus and Alertmanager (Debian's packages) beside a lab host.

One lab host runs `shop` under pm2 with node_exporter installed by the `waops_host` role (the option
`waops_host_node_exporter`), its alerts going to a webhook in this test and its verified backups to a
restic repository over SFTP on a second lab host. On the controller side (this machine, 127.0.0.1 only)
run: Prometheus scraping the host over the lab network and a node_exporter here that serves the incident store's
figures (`waops mttr report --output prometheus`), with monitoring/'s rules (every `for:` shortened);
Alertmanager with the example file's inhibition and a webhook receiver in this test. Faults are made the
way test_recover makes them; the host check is run at once instead of waiting for its cron minute.

Every alert of monitoring/waops-alerts.yml fires in Alertmanager on a real fault and then clears:
session loss and auth-store bloat (cleared by `waops recover`; the warning is inhibited by the critical),
the scheduled check and backups stopped, a backup damaged on disk, the alert webhook down, the keep-alive
configured off, the off-host repository unreadable, a release that crash-loops.

Thresholds of hours or minutes (backup age, check age, keep-alive age, the crash-loop window) cannot be
waited for: a case that needs one loads a lab copy of the rules with those NUMBERS rewritten (nothing
else; the shipped files stay as they are) and reloads Prometheus, then puts the shipped numbers back. The
metrics file the host check writes is never edited: every value is the host's own.

Set WAOPS_TEST_LAB=<name> to reuse a lab that is up and provisioned this way (development); it is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.test_recover import RcLab, backups, incident, inject, recover_cli, take_backup, wait_cause, wait_healthy
from tests.monitoring_files import MONITORING, panel_queries, with_numbers, with_short_fors

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "monitor"
FOR = "3s"  # every alert's `for:` in the lab (10 and 15 minutes in the shipped file)
METRICS_FILE = "/var/lib/node_exporter/textfile_collector/waops.prom"


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    textfile_dir: Path
    rules_dir: Path
    notifications: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Mon:
    r: RcLab
    stack: Stack
    hook: HookSink

    @property
    def target(self) -> str:
        return f"{self.r.host(1).ip}:9100"


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).close()
            return
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready: {log.read_text()[-2000:]}")


class _Receiver(BaseHTTPRequestHandler):
    sink: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.sink.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def stack(host_target: str) -> Iterator[Stack]:
    """Prometheus, Alertmanager and a controller-side node_exporter on 127.0.0.1, torn down after."""
    work = Path(tempfile.mkdtemp(prefix="waops-mon-"))
    procs: list[subprocess.Popen[bytes]] = []
    notifications: list[dict[str, Any]] = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), type("Sink", (_Receiver,), {"sink": notifications}))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    def start(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = work / f"{name}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # fmt: skip
        procs.append(p)
        return p

    try:
        textfile = work / "textfile"
        textfile.mkdir()
        ne_port, am_port, prom_port = _free_port(), _free_port(), _free_port()
        ne = start(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}",
                    "--collector.disable-defaults", "--collector.textfile",
                    f"--collector.textfile.directory={textfile}"], "node_exporter")  # fmt: skip
        example = yaml.safe_load((MONITORING / "alertmanager.example.yml").read_text())
        hook = {"url": f"http://127.0.0.1:{receiver.server_port}/", "send_resolved": True}
        am_cfg = {
            "route": {"receiver": "test", "group_by": ["alertname", "instance", "bot"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "inhibit_rules": example["inhibit_rules"],  # the shipped inhibition, as it is
            "receivers": [{"name": "test", "webhook_configs": [hook]}],
        }  # fmt: skip
        (work / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))
        am = start(["prometheus-alertmanager", f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address="], "alertmanager")  # fmt: skip
        shutil.copy(MONITORING / "waops-rules.yml", work)
        (work / "waops-alerts.yml").write_text(with_short_fors((MONITORING / "waops-alerts.yml").read_text(), FOR))
        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "waops-rules.yml"), str(work / "waops-alerts.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": "waops", "static_configs": [{"targets": [host_target]}]},
                {"job_name": "waops-controller", "static_configs": [{"targets": [f"127.0.0.1:{ne_port}"]}]},
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        prom = start(["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s",
                      "--web.enable-lifecycle"],
                     "prometheus")  # fmt: skip
        _wait_ready(f"http://127.0.0.1:{ne_port}/metrics", ne, work / "node_exporter.log")
        _wait_ready(f"http://127.0.0.1:{am_port}/-/ready", am, work / "alertmanager.log")
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, work / "prometheus.log")
        yield Stack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", textfile, work, notifications)
    finally:
        receiver.shutdown()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def _repository_host(lab: Any, keydir: Path) -> dict[str, Any]:
    """The lab's second host as the SFTP server of the bot's restic repository (as test_offhost makes it);
    returns the role variables that send every verified backup there."""
    c = lab.hosts()[1]
    key = keydir / "restic-shop"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (keydir / "restic-shop.pub").read_text().strip()
    lab.ssh(c, "id restic >/dev/null 2>&1 || useradd --system --create-home --home-dir /srv/restic --shell /bin/sh "
               "restic; install -d -o restic -g restic -m 0700 /srv/restic/.ssh && "
               f"echo '{pub}' > /srv/restic/.ssh/authorized_keys && "
               "chown restic:restic /srv/restic/.ssh/authorized_keys && chmod 0600 /srv/restic/.ssh/authorized_keys",
            check=True)  # fmt: skip
    known = [ln for ln in lab.known_hosts.read_text().splitlines() if ln.split()[:1] == [c.ip]]
    return {"waops_host_offhost_repository": f"sftp:restic@{c.ip}:/srv/restic",
            "waops_host_offhost_passwords": {"shop": secrets.token_urlsafe(24)},
            "waops_host_offhost_ssh_keys": {"shop": key.read_text()},
            "waops_host_offhost_ssh_known_hosts": "\n".join(known)}  # fmt: skip


def _write_host_vars(lab: Any, offhost: dict[str, Any]) -> None:
    """node_exporter on; a keep-alive every 36 s and no quiet hours, so one is sent whatever the hour; the
    host check's alerts to a webhook in this test (on the lab bridge), with no quiet hours either and a
    session-down alert after 6 s, so an incident queues a message at once."""
    h = lab.hosts()[0]
    bots = [dict(b, keepalive_hours="0.01", quiet_hours="off") for b in h.bots]
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind((f"{lab.settings.prefix}.1", 0))
        port = s.getsockname()[1]
    doc = {"waops_bots": bots, "waops_host_node_exporter": True, "waops_host_alert_quiet_hours": "",
           "waops_host_alert_webhook_url": f"http://{lab.settings.prefix}.1:{port}/hook",
           "waops_host_check_session_down_minutes": 0.1, **offhost}
    path = host_vars / f"{h.name}.yml"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)  # the restic password and key


def _hook_address(lab: Any) -> tuple[str, int]:
    doc = json.loads((lab.inventory_dir / "host_vars" / f"{lab.hosts()[0].name}.yml").read_text())
    u = urllib.parse.urlsplit(doc["waops_host_alert_webhook_url"])
    return str(u.hostname), int(u.port or 80)


class HookSink:
    """The alert webhook the host check posts to; stop() is the fault (the chat service down)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.received: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("Hook", (_Receiver,), {"sink": self.received})
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(self.address, handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="module")
def mon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mon]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    for tool in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install prometheus prometheus-alertmanager "
                        "prometheus-node-exporter; .ci/run does)")
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("mon") / "incidents.db"
    hook: HookSink | None = None
    try:
        if not reuse:
            lab.up(2, ("pm2",), log=lambda _m: None)  # the bot's host, and its off-host repository's
            _write_host_vars(lab, _repository_host(lab, tmp_path_factory.mktemp("keys")))
            proc = subprocess.run(["ansible-playbook", "-i", str(lab.inventory_dir), "playbooks/site.yml",
                                   "--limit", lab.hosts()[0].name],
                                  cwd=_repo(), capture_output=True, text=True, timeout=1800)  # fmt: skip
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        hook = HookSink(_hook_address(lab))
        hook.start()
        r = RcLab(lab, lab.inventory_dir, store)
        wait_healthy(r, 1)
        take_backup(r, 1)  # a fresh verified backup: no backup alert muddles the cases
        with stack(f"{r.host(1).ip}:9100") as s:
            yield Mon(r, s, hook)
    finally:
        if hook is not None:
            hook.stop()
        if not reuse:
            lab.down(log=lambda _m: None)


# --- helpers ------------------------------------------------------------------------------------------


def run_check(m: Mon) -> None:
    """The host check as cron runs it (an open incident exits 1)."""
    m.r.ssh(1, f"waops-host check --bot shop --state-dir /var/lib/waops/agent --metrics-file {METRICS_FILE} "
               ">/dev/null 2>&1; true", timeout=120)  # fmt: skip


def query(m: Mon, expr: str) -> list[dict[str, Any]]:
    doc = _get(f"{m.stack.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def am_alerts(m: Mon, name: str) -> list[dict[str, Any]]:
    """Alertmanager's API v2: this bot's alerts of that name it holds now (active or suppressed)."""
    filters = [f'alertname="{name}"', 'bot="shop"', f'instance="{m.target}"']
    url = f"{m.stack.alertmanager}/api/v2/alerts?" + urllib.parse.urlencode([("filter", f) for f in filters])
    return _get(url)


def held(m: Mon, name: str) -> list[dict[str, Any]]:
    return [a for a in am_alerts(m, name) if a["status"]["state"] in ("active", "suppressed")]


def resolved_notified(m: Mon, name: str, since: int) -> bool:
    return any(n["status"] == "resolved" and a["labels"]["alertname"] == name and a["status"] == "resolved"
               for n in m.stack.notifications[since:] for a in n["alerts"])  # fmt: skip


def until(m: Mon, what: str, ok: Callable[[], Any], timeout: float = 180) -> Any:
    """Run the host check and look again until OK returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_check(m)
        time.sleep(3)  # a scrape, an evaluation past `for:`, Alertmanager's group wait
        got = ok()
        if got:
            return got
    raise AssertionError(f"timed out waiting for {what}; notifications: {m.stack.notifications[-3:]}")


def fire_then_clear(m: Mon, name: str, make_fault: Callable[[], None], cause: str,
                    also: Callable[[], bool] = lambda: True) -> dict[str, Any]:  # fmt: skip
    """Fault -> the alert active in Alertmanager -> `waops recover` -> gone, with a resolved notification."""
    open_now = f'waops_session_open{{bot="shop",instance="{m.target}"}} == 1'
    assert until(m, "the bot's metrics", lambda: query(m, open_now))
    assert not [a for a in am_alerts(m, name) if a["status"]["state"] == "active"]
    make_fault()
    wait_cause(m.r, 1, cause)
    fired = until(m, f"{name} active in Alertmanager",
                  lambda: [a for a in am_alerts(m, name) if a["status"]["state"] == "active"] if also() else [])
    seen = len(m.stack.notifications)
    _rc, res = recover_cli(m.r, 1)
    assert res["cause"] == cause and res["outcome"] in ("resolved", "rolled_back"), res
    inc = incident(m.r, res["incident_id"])
    assert inc is not None and inc.mttr_s is not None and inc.mttr_s > 0
    until(m, f"{name} cleared", lambda: not held(m, name) and resolved_notified(m, name, seen))
    return fired[0]


def _reload(m: Mon) -> None:
    req = urllib.request.Request(f"{m.stack.prometheus}/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


@contextlib.contextmanager
def lab_numbers(m: Mon, alerts: dict[str, str] | None = None,
                recording: dict[str, str] | None = None) -> Iterator[None]:
    """Prometheus on a copy of the rules with these numbers rewritten (old text -> new), then the shipped ones."""
    shipped_alerts = with_short_fors((MONITORING / "waops-alerts.yml").read_text(), FOR)
    shipped_rules = (MONITORING / "waops-rules.yml").read_text()
    try:
        (m.stack.rules_dir / "waops-alerts.yml").write_text(with_numbers(shipped_alerts, alerts or {}))
        (m.stack.rules_dir / "waops-rules.yml").write_text(with_numbers(shipped_rules, recording or {}))
        _reload(m)
        yield
    finally:
        (m.stack.rules_dir / "waops-alerts.yml").write_text(shipped_alerts)
        (m.stack.rules_dir / "waops-rules.yml").write_text(shipped_rules)
        _reload(m)


def active(m: Mon, name: str) -> list[dict[str, Any]]:
    return [a for a in am_alerts(m, name) if a["status"]["state"] == "active"]


def watch(m: Mon, what: str, ok: Callable[[], Any], timeout: float = 180) -> Any:
    """Look again (without running the host check) until OK returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ok()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; notifications: {m.stack.notifications[-3:]}")


@contextlib.contextmanager
def cron_off(m: Mon) -> Iterator[None]:
    """The bot's cron file moved out of /etc/cron.d (a host where the scheduled check and backups stopped)."""
    m.r.ssh(1, "mv /etc/cron.d/waops-shop /root/waops-shop.cron")
    try:
        yield
    finally:
        m.r.ssh(1, "mv /root/waops-shop.cron /etc/cron.d/waops-shop")


# --- the cases ----------------------------------------------------------------------------------------


def test_session_loss_fires_in_alertmanager_and_clears_after_recover(mon: Mon) -> None:
    alert = fire_then_clear(mon, "WaopsSessionDown", lambda: inject(mon.r, 1, "logged_out"), "logged_out")
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "waops"
    assert alert["annotations"]["runbook_url"].endswith("#alert-waopssessiondown")
    assert alert["annotations"]["summary"] == f"WhatsApp session of shop on {mon.target} is not open"


def test_auth_bloat_fires_in_alertmanager_and_clears_after_recover(mon: Mon) -> None:
    def warning_inhibited() -> bool:  # the example file's rule: the critical alert silences the warning
        warn = am_alerts(mon, "WaopsAuthFilesWarning")
        return bool(warn) and all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in warn)

    alert = fire_then_clear(mon, "WaopsAuthFilesCritical",
                            lambda: mon.r.sim.fault(mon.r.phone(1), "file_bloat", count=400), "file_bloat",
                            also=warning_inhibited)  # fmt: skip
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["store"] == "files"
    assert int(alert["annotations"]["summary"].split(" holds ")[1].split()[0]) >= 300
    assert not held(mon, "WaopsAuthFilesWarning")


def test_every_dashboard_panel_returns_data(mon: Mon) -> None:
    from waops.incidents import connect

    with connect(mon.r.store) as s:
        repaired = [i for i in s.list(limit=None) if i.mttr_s is not None]
    if not repaired:  # run alone: one quick repair, so the MTTR panels have an incident to show
        inject(mon.r, 1, "process_down")
        wait_cause(mon.r, 1, "process_down")
        assert recover_cli(mon.r, 1)[1]["outcome"] == "resolved"
    wait_healthy(mon.r, 1)
    # The controller's export, as the README's cron line writes it (then renamed into place).
    proc = subprocess.run([sys.executable, "-m", "waops", "mttr", "report", "--store", str(mon.r.store),
                           "--output", "prometheus"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    tmp = mon.stack.textfile_dir / "waops_incidents.prom.tmp"
    tmp.write_text(proc.stdout)
    tmp.chmod(0o644)
    tmp.rename(mon.stack.textfile_dir / "waops_incidents.prom")

    queries = panel_queries()
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [f"{title}: {expr}" for title, expr in queries if not query(mon, expr)]
        return not empty

    try:
        until(mon, "every panel's query to return data", all_have_data, timeout=150)
    except AssertionError:
        raise AssertionError("panels without data:\n" + "\n".join(empty)) from None
    assert len({t for t, _ in queries}) >= 15


def test_every_rule_evaluates_without_error_on_real_series(mon: Mon) -> None:
    """Vector matching (ignoring/on) meets the real label sets: no rule fails its evaluation."""
    from tests.monitoring_files import rules

    def clean() -> list[dict[str, Any]]:
        groups = _get(f"{mon.stack.prometheus}/api/v1/rules")["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        bad = [r for r in loaded if r["health"] != "ok" or r.get("lastError")]
        return loaded if loaded and not bad and all(r.get("lastEvaluation", "").startswith("2") for r in loaded) else []

    loaded = until(mon, "every rule evaluated cleanly", clean, timeout=60)
    assert sorted(r["name"] for r in loaded) == sorted(r.get("alert") or r["record"] for r in rules())


def test_check_not_running_fires_and_clears(mon: Mon) -> None:
    """The scheduled check stops (its cron file gone): 20 minutes become 20 s in the lab copy."""
    name = "WaopsCheckNotRunning"
    with lab_numbers(mon, alerts={"waops:check_age_seconds > 20 * 60": "waops:check_age_seconds > 20"}):
        run_check(mon)
        assert not active(mon, name)
        with cron_off(mon):
            fired = watch(mon, f"{name} active", lambda: active(mon, name), timeout=120)
        seen = len(mon.stack.notifications)
        until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen))
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopschecknotrunning")


def test_backup_stale_fires_and_clears_after_a_backup(mon: Mon) -> None:
    """Backups stop (the cron file gone); 7 hours become 40 s in the lab copy; a new backup clears it."""
    name = "WaopsBackupStale"
    take_backup(mon.r, 1)
    with lab_numbers(mon, alerts={"waops_backup_newest_age_seconds > 7 * 3600":
                                  "waops_backup_newest_age_seconds > 40"}):  # fmt: skip
        until(mon, "a fresh backup seen", lambda: query(mon, 'waops_backup_newest_age_seconds{bot="shop"} < 40'))
        assert not active(mon, name)
        with cron_off(mon):
            fired = until(mon, f"{name} active", lambda: active(mon, name), timeout=150)
            seen = len(mon.stack.notifications)
            take_backup(mon.r, 1)
            until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen),
                  timeout=35)  # fmt: skip
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopsbackupstale")


def test_backup_unverified_fires_and_clears_after_a_backup(mon: Mon) -> None:
    """The newest backup's archive is damaged on disk and the scheduled verify records it; 600 s become 1 s."""
    name = "WaopsBackupUnverified"
    take_backup(mon.r, 1)
    listing = json.loads(mon.r.ssh(1, "waops-host list --bot shop --json"))["results"][0]
    newest = f"{listing['dir']}/{listing['backups'][0]['id']}"
    with lab_numbers(mon, alerts={"waops_backup_newest_age_seconds > 600": "waops_backup_newest_age_seconds > 1"}):
        until(mon, "the newest backup verified", lambda: query(mon, 'waops_backup_newest_verified{bot="shop"} == 1'))
        assert not active(mon, name)
        mon.r.ssh(1, f"printf 'bit rot' | dd of={newest}/auth.tar bs=1 seek=700 conv=notrunc status=none")
        mon.r.ssh(1, "waops-host verify --bot shop --json >/dev/null 2>&1; true", timeout=120)
        assert not backups(mon.r, 1)[0]["verified"]
        fired = until(mon, f"{name} active", lambda: active(mon, name), timeout=120)
        seen = len(mon.stack.notifications)
        take_backup(mon.r, 1)
        until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen))
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopsbackupunverified")


def test_alerts_undelivered_fires_and_clears_when_the_webhook_is_back(mon: Mon) -> None:
    """The chat webhook is down while an incident opens: the host check's message waits in its outbox."""
    name = "WaopsAlertsUndelivered"
    assert not active(mon, name)
    before = len(mon.hook.received)
    mon.hook.stop()
    try:
        inject(mon.r, 1, "process_down")  # a session-down incident: its message cannot go out
        fired = until(mon, f"{name} active", lambda: active(mon, name))
    finally:
        mon.hook.start()
    seen = len(mon.stack.notifications)
    until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen))
    # the message that waited went out once the webhook answered again
    late = mon.hook.received[before:]
    assert any(m["condition"] == "session_down" and m["bot"] == "shop" for m in late), late
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopsalertsundelivered")
    _rc, res = recover_cli(mon.r, 1)
    assert res["outcome"] == "resolved", res


def test_keepalive_overdue_fires_and_clears(mon: Mon) -> None:
    """The bot runs with its keep-alive configured off; 18 hours become 150 s in the lab copy (keep-alives
    go every 36 s here, looked at once a minute)."""
    name = "WaopsKeepaliveOverdue"
    cfg = json.loads(mon.r.ssh(1, "cat /etc/waops/bots/shop.json"))
    env = "/etc/waops/bots/shop.env"
    restart = (f"runuser -u {cfg['user']} -- env PM2_HOME={cfg['pm2_home']} pm2 startOrRestart "
               f"{cfg['release_root']}/ecosystem.config.js --update-env >/dev/null")  # fmt: skip
    numbers = {"waops_last_keepalive_timestamp_seconds > 18 * 3600": "waops_last_keepalive_timestamp_seconds > 150",
               "waops_session_age_seconds > 18 * 3600": "waops_session_age_seconds > 150"}  # fmt: skip
    with lab_numbers(mon, alerts=numbers):
        until(mon, "a recent keep-alive",
              lambda: query(mon, 'time() - waops_last_keepalive_timestamp_seconds{bot="shop"} < 100'))  # fmt: skip
        assert not active(mon, name)
        mon.r.ssh(1, f"cp -p {env} /root/shop.env.saved && "
                     f"sed -i 's/^WAOPS_KEEPALIVE_HOURS=.*/WAOPS_KEEPALIVE_HOURS=\"0\"/' {env} && {restart}")
        try:
            fired = until(mon, f"{name} active", lambda: active(mon, name), timeout=360)
        finally:
            mon.r.ssh(1, f"mv /root/shop.env.saved {env} && {restart}")
        seen = len(mon.stack.notifications)
        until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen),
              timeout=240)  # fmt: skip
    wait_healthy(mon.r, 1)
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopskeepaliveoverdue")


def test_offhost_failed_fires_and_clears_after_a_copy_goes_through(mon: Mon) -> None:
    """The repository on the backup server becomes unreadable: the next backup's off-host copy fails."""
    name = "WaopsOffhostStale"
    repo_host = mon.r.lab.hosts()[1]
    take_backup(mon.r, 1)
    until(mon, "an off-host copy that went through", lambda: query(mon, 'waops_offhost_last_ok{bot="shop"} == 1'))
    assert not active(mon, name)
    mode = mon.r.lab.ssh(repo_host, "stat -c %a /srv/restic/shop").strip()
    mon.r.lab.ssh(repo_host, "chmod 000 /srv/restic/shop", check=True)
    try:
        mon.r.ssh(1, "waops-host backup --bot shop --reason manual --json >/dev/null 2>&1; true", timeout=300)
        fired = until(mon, f"{name} active", lambda: active(mon, name))
    finally:
        mon.r.lab.ssh(repo_host, f"chmod {mode} /srv/restic/shop", check=True)
    seen = len(mon.stack.notifications)
    take_backup(mon.r, 1)
    until(mon, f"{name} cleared", lambda: not held(mon, name) and resolved_notified(mon, name, seen))
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["annotations"]["runbook_url"].endswith("#alert-waopsoffhoststale")


def test_crash_loop_fires_and_clears_after_recover(mon: Mon) -> None:
    """A release that throws at start-up; the 15-minute restart window becomes 60 s in the lab copy. Last in
    the file: once the shipped 15 minutes are back the restarts fire it again, and diagnose says `crash`."""
    name = "WaopsCrashLoop"
    with lab_numbers(mon, recording={"increase(waops_process_restarts_total[15m])":
                                     "increase(waops_process_restarts_total[60s])"}):  # fmt: skip
        alert = fire_then_clear(mon, name, lambda: inject(mon.r, 1, "crash"), "crash")
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"].endswith("#alert-waopscrashloop")
