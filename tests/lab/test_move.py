"""`waops move` on real lab hosts, the CLI as a person runs it.

One lab for the module: host A runs `shop` (pm2), host B (systemd) is a ready image with nothing of the bot
on it, host C holds the bot's restic repository (SFTP). The simulator does not link by itself during the
moves, so a QR shown anywhere would be an event of the phone's, and a second socket on the credentials
a `replaced` (440) event. The cases run in order, each starting where the last one left the bot:

1. A -> B with B unable to reach WhatsApp: the session never opens there, the move rolls back (B fenced,
   A unfenced, serving, same device), recorded as an incident `rolled_back`;
2. A -> B, A healthy: A fenced first (stopped, disabled, a start by hand does nothing, still down after a
   power cycle), B provisioned
   without starting the bot, restored, open with the same device, no QR, a test message round trip;
3. B powered off (no clean shutdown), `waops move shop --to A`: the copy comes from C; A serves it with
   no QR; when B boots again its bot stays stopped (the start gate reads the owner in C's repository),
   site.yml and the check keep it fenced, and the session on A never sees a 440.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.test_provision_support import bot_running, health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "t-move"


@dataclass
class MoveLab:
    lab: Any
    inventory: Path
    store: Path
    phone: str
    device: str

    @property
    def a(self) -> Any:
        return self.lab.hosts()[0]

    @property
    def b(self) -> Any:
        return self.lab.hosts()[1]

    @property
    def c(self) -> Any:
        return self.lab.hosts()[2]

    @property
    def sim(self) -> Any:
        from waops_lab.sandbox.client import SimulatorClient

        return SimulatorClient(self.lab.control_url)

    def events_since(self, mark: int) -> list[dict[str, Any]]:
        return self.sim.events(self.phone)[mark:]

    def mark(self) -> int:
        return len(self.sim.events(self.phone))


def _waops() -> str:
    return shutil.which("waops") or str(Path(sys.executable).with_name("waops"))


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def hosts_doc(inventory: Path) -> dict[str, Any]:
    return json.loads((inventory / "hosts.yml").read_text())


def inventory_hosts(inventory: Path) -> dict[str, Any]:
    return hosts_doc(inventory)["all"]["children"]["waops_bot_hosts"]["hosts"]


def setup_move_lab(lab: Any, tmp: Path) -> tuple[Path, str]:
    """C (the third host) serves an SFTP account for the repositories; only A (the first) lists the bot;
    every host of the inventory carries the off-host settings (the move provisions the new host with
    them). Returns the inventory and the bot's phone."""
    a, c = lab.hosts()[0], lab.hosts()[2]
    key = tmp / "restic-shop"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp / "restic-shop.pub").read_text().strip()
    # the restic account logs in only once C has finished booting (pam_nologin), on a busy machine too
    lab.ssh(c, "systemctl is-system-running --wait", timeout=240)
    lab.ssh(c, "useradd --system --create-home --home-dir /srv/restic --shell /bin/sh restic && "
               "install -d -o restic -g restic -m 0700 /srv/restic/.ssh && "
               f"echo '{pub}' > /srv/restic/.ssh/authorized_keys && "
               "chown restic:restic /srv/restic/.ssh/authorized_keys && chmod 0600 /srv/restic/.ssh/authorized_keys",
            check=True)
    known = [ln for ln in lab.known_hosts.read_text().splitlines() if ln.split()[:1] == [c.ip]]
    inv = lab.inventory_dir
    doc = hosts_doc(inv)
    doc["all"]["vars"].update({
        "waops_host_offhost_repository": f"sftp:restic@{c.ip}:/srv/restic",
        "waops_host_offhost_passwords": {"shop": secrets.token_urlsafe(24)},
        "waops_host_offhost_ssh_keys": {"shop": key.read_text()},
        "waops_host_offhost_ssh_known_hosts": "\n".join(known),
    })
    hosts = doc["all"]["children"]["waops_bot_hosts"]["hosts"]
    for h in lab.hosts()[1:]:
        hosts[h.name]["waops_bots"] = []  # a ready image: nothing of the bot until a move provisions it
    del hosts[c.name]  # the backup host is no bot host
    (inv / "hosts.yml").write_text(json.dumps(doc, indent=2) + "\n")
    return inv, hosts[a.name]["waops_bots"][0]["phone"]


@pytest.fixture(scope="module")
def mv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoveLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    keep = os.environ.get("WAOPS_TEST_LAB")  # development: bring the lab up once, keep it (not for reruns)
    lab = _lab(keep or LAB_NAME)
    tmp = tmp_path_factory.mktemp("move")
    try:
        if keep and lab.hosts():
            inv, phone = lab.inventory_dir, lab.hosts()[0].bots[0]["phone"]
        else:
            lab.up(3, ("pm2", "systemd", "pm2"), log=lambda _m: None)
            inv, phone = setup_move_lab(lab, tmp)
            run = run_site(inv, "--limit", lab.hosts()[0].name)
            assert run.rc == 0, run.tail()
        m = MoveLab(lab, inv, tmp / "incidents.db", phone, "")
        if not keep:
            assert wait_until(lambda: health(lab, m.a).get("connection") == "open", 120), health(lab, m.a)
        m.device = device_id(m)
        m.sim.set_auto_link(False)  # from here a QR would wait, visible, instead of linking a new device
        yield m
    finally:
        if not keep:
            lab.down(log=lambda _m: None)


# --- helpers (bench_move uses them too) ------------------------------------------------------------


def device_id(m: MoveLab) -> str:
    devices = m.sim.phone(m.phone)["devices"]
    assert len(devices) == 1, devices
    return str(devices[0]["id"])


def move(m: MoveLab, to: Any, *extra: str, timeout: float = 1800) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([_waops(), "move", "shop", "--to", to.name, "-i", str(m.inventory), "--store",
                           str(m.store), "--output", "json", *extra], cwd=_repo(), capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, NO_COLOR="1"))
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, doc.get("result", {}), proc.stderr


def fenced(m: MoveLab, host: Any) -> bool:
    return m.lab.ssh(host, "test -e /etc/waops/bots/shop.fence && echo yes").strip() == "yes"


def unit_states(m: MoveLab, host: Any) -> list[str]:
    unit = "waops-bot-shop.service" if host.service_manager == "systemd" else "pm2-wa-shop.service"
    return m.lab.ssh(host, f"systemctl is-enabled {unit}; systemctl is-active {unit}").split()


def fenced_for_good(m: MoveLab, host: Any) -> bool:
    """Marker, bot not running, its unit disabled, and a start by hand does nothing (the unit's fence
    condition: `systemctl mask` cannot link over a unit file in /etc/systemd/system)."""
    unit = "waops-bot-shop.service" if host.service_manager == "systemd" else "pm2-wa-shop.service"
    m.lab.ssh(host, f"systemctl start {unit}")
    enabled, active = unit_states(m, host)
    return (fenced(m, host) and not user_processes(m, host) and active != "active"
            and enabled in ("masked", "disabled"))


def user_processes(m: MoveLab, host: Any) -> list[str]:
    """What runs as the bot's user (a fenced host: nothing, pm2's daemon included). Read with ps, not
    `pm2 jlist`, which would spawn a daemon outside the unit."""
    return m.lab.ssh(host, "ps -u wa-shop -o args= || true").splitlines()


def incident(m: MoveLab, incident_id: int) -> Any:
    from waops.incidents import connect

    with connect(str(m.store)) as st:
        return st.get(incident_id)


def no_qr_no_440(m: MoveLab, mark: int) -> None:
    kinds = [e["type"] for e in m.events_since(mark)]
    assert "qr" not in kinds and "linked" not in kinds, kinds
    assert "replaced" not in kinds, kinds
    opened = [e for e in m.events_since(mark) if e["type"] == "open"]
    assert opened and {str(e["device"]) for e in opened} == {m.device}, opened


def boot_again(m: MoveLab, host: Any) -> None:
    """Power a host on after `power_off`. The kernel drops the killed container's veth a little later
    (its network namespace is cleaned up asynchronously): a boot that finds it still there is retried."""
    from waops_lab.errors import LabError

    for attempt in range(3):
        time.sleep(5 + 10 * attempt)
        try:
            m.lab.power_on(host, timeout=120)
            return
        except LabError:
            if attempt == 2:
                raise
            m.lab.power_off(host)


def round_trip(m: MoveLab) -> str:
    return m.sim.send_message(m.phone, "ping", timeout=20)


def block_whatsapp(m: MoveLab, host: Any, on: bool) -> None:
    """The host cannot reach the simulator (WhatsApp) any more; SSH and the repository still work."""
    port = m.lab.sim_url.rsplit(":", 1)[1]
    verb = "add" if on else "del"
    m.lab.ssh(host, f"ip rule {verb} ipproto tcp dport {port} prohibit", check=True)


# --- the cases, in order ------------------------------------------------------------------------------


def test_a_move_that_does_not_verify_rolls_back(mv: MoveLab) -> None:
    mark = mv.mark()
    block_whatsapp(mv, mv.b, True)
    try:
        rc, res, err = move(mv, mv.b, "--verify-timeout", "40")
    finally:
        block_whatsapp(mv, mv.b, False)
    assert rc == 1 and res.get("outcome") == "rolled_back", (res, err[-3000:])
    names = [s["name"] for s in res["steps"]]
    assert names.index("fence shop on " + mv.a.name) < names.index("provision " + mv.b.name), names
    # B stopped and fenced; A unfenced, serving the same device; nothing showed a QR
    assert fenced_for_good(mv, mv.b), unit_states(mv, mv.b)
    assert not fenced(mv, mv.a) and unit_states(mv, mv.a) == ["enabled", "active"]
    assert wait_until(lambda: bot_running(mv.lab, mv.a) and health(mv.lab, mv.a).get("connection") == "open", 60)
    assert round_trip(mv)
    kinds = [e["type"] for e in mv.events_since(mark)]
    assert "qr" not in kinds and "linked" not in kinds, kinds
    assert device_id(mv) == mv.device
    inc = incident(mv, res["incident_id"])
    assert inc.cause == "moved" and inc.outcome == "rolled_back" and inc.bot == "shop", inc
    assert any(s.name.startswith("verify shop on " + mv.b.name) and s.result == "failed" for s in inc.steps)
    # the inventory is unchanged: the bot is still A's
    assert [b["name"] for b in inventory_hosts(mv.inventory)[mv.a.name]["waops_bots"]] == ["shop"]


def test_planned_move_fences_a_first_and_b_serves_the_same_session(mv: MoveLab) -> None:
    mark = mv.mark()
    rc, res, err = move(mv, mv.b, "--write-inventory")
    assert rc == 0 and res.get("outcome") == "resolved", (res, err[-3000:])
    assert res["cause"] == "moved" and res["source"] == "old-host" and res["inventory_written"]
    names = [s["name"] for s in res["steps"]]
    # fenced before anything is provisioned; B (fenced by the rollback) unfenced without a start
    assert names.index("fence shop on " + mv.a.name) < names.index("provision " + mv.b.name), names
    assert "lift the old fence of shop on " + mv.b.name in names
    assert health(mv.lab, mv.b).get("connection") == "open" and round_trip(mv)
    no_qr_no_440(mv, mark)
    assert device_id(mv) == mv.device
    assert fenced_for_good(mv, mv.a), unit_states(mv, mv.a)
    hosts = inventory_hosts(mv.inventory)
    assert [b["name"] for b in hosts[mv.b.name]["waops_bots"]] == ["shop"]
    assert hosts[mv.a.name]["waops_fenced_bots"] == [{"name": "shop", "owner": mv.b.name}]
    inc = incident(mv, res["incident_id"])
    assert inc.cause == "moved" and inc.outcome == "resolved" and inc.mttr_s and inc.mttr_s > 0
    # a power cycle of A does not bring its copy back
    mark = mv.mark()
    mv.lab.power_off(mv.a)
    boot_again(mv, mv.a)
    time.sleep(15)  # boot finishes: any unit that would start has started
    assert fenced_for_good(mv, mv.a), unit_states(mv, mv.a)
    assert "replaced" not in [e["type"] for e in mv.events_since(mark)]


def test_host_lost_move_comes_from_the_repository_and_the_old_host_stays_down(mv: MoveLab) -> None:
    # the scheduled backup of B's session reaches C (cron does this; run it now)
    out = json.loads(mv.lab.ssh(mv.b, "waops-host backup --bot shop --reason cron --json", check=True,
                                timeout=300))
    assert out["results"][0]["offhost"]["ok"], out
    mark = mv.mark()
    mv.lab.power_off(mv.b)  # no clean shutdown
    rc, res, err = move(mv, mv.a, "--write-inventory")
    assert rc == 0 and res.get("outcome") == "resolved", (res, err[-3000:])
    assert res["cause"] == "host_lost" and res["source"] == "repository", res
    assert health(mv.lab, mv.a).get("connection") == "open" and round_trip(mv)
    no_qr_no_440(mv, mark)
    assert device_id(mv) == mv.device
    inc = incident(mv, res["incident_id"])
    assert inc.cause == "host_lost" and inc.outcome == "resolved", inc
    hosts = inventory_hosts(mv.inventory)
    assert hosts[mv.b.name]["waops_fenced_bots"] == [{"name": "shop", "owner": mv.a.name}]

    # B boots again: its enabled unit meets the start gate, which reads A as the owner in C's repository
    boot_again(mv, mv.b)
    assert wait_until(lambda: fenced(mv, mv.b), 90), mv.lab.ssh(mv.b, "journalctl -u waops-bot-shop -n 30")
    time.sleep(10)
    assert fenced_for_good(mv, mv.b), unit_states(mv, mv.b)
    # site.yml with the written inventory, and the check, keep it that way
    run = run_site(mv.inventory, "--limit", mv.b.name)
    assert run.rc == 0, run.tail()
    mv.lab.ssh(mv.b, "waops-host check --bot shop --json")
    assert fenced_for_good(mv, mv.b), unit_states(mv, mv.b)
    assert health(mv.lab, mv.a).get("connection") == "open" and round_trip(mv)
    kinds = [e["type"] for e in mv.events_since(mark)]
    assert "replaced" not in kinds and "qr" not in kinds, kinds
