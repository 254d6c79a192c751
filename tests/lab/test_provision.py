"""Provisioning on real lab hosts: one bot under pm2, one under systemd.

site.yml converges on two fresh hosts, the sandbox bot links to the simulator and stays online, a second
run changes nothing, `--check --diff` reports nothing, the cron entries exist, and after a reboot the bot
is back under both managers. The hosts are brought up once for the module (the converge is the slow part).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.lab.test_provision_support import bot_running, health, pm2_processes, run_site, wait_until

pytestmark = pytest.mark.lab

LAB_NAME = "t-prov"


@pytest.fixture(scope="module")
def converged() -> Iterator[tuple]:
    """A two-host lab (pm2, systemd) after the first site.yml run; removed afterwards, pass or fail."""
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    lab = _lab(LAB_NAME)
    try:
        inventory = lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
        first = run_site(inventory)
        yield lab, inventory, first
    finally:
        lab.down(log=lambda _m: None)


def test_first_run_converges_both_hosts(converged) -> None:
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    recap = first.recap()
    assert set(recap) == {h.name for h in lab.hosts()}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0 for r in recap.values()), recap


def test_bot_links_to_the_simulator_and_stays_online(converged) -> None:
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        assert wait_until(lambda h=host: health(lab, h).get("connection") == "open", 60), health(lab, host)
        assert bot_running(lab, host), host.name
    time.sleep(10)  # still online a while later, no restart loop
    for host in lab.hosts():
        assert bot_running(lab, host), host.name
        assert health(lab, host)["connection"] == "open"
        if host.service_manager == "pm2":
            (proc,) = pm2_processes(lab, host)
            env = proc["pm2_env"]
            assert env["exec_mode"] == "fork_mode" and env["restart_time"] == 0, env
        else:
            restarts = lab.ssh(host, "systemctl show -p NRestarts --value waops-bot-shop.service").strip()
            assert restarts == "0"


def test_second_run_changes_nothing(converged) -> None:
    """The second run goes through `waops provision` (site.yml by ansible-runner): changed=0 everywhere."""
    lab, inventory, first = converged
    assert first.rc == 0, first.tail()
    proc = subprocess.run([sys.executable, "-m", "waops", "provision", "-i", str(inventory), "--output", "json"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    second = json.loads(proc.stdout)
    assert second["ok"] and second["unreachable"] == [], second["failures"]
    assert set(second["stats"]) == {h.name for h in lab.hosts()}
    assert all(st["changed"] == 0 and st["failed"] == 0 and st["ok"] > 0 for st in second["stats"].values()), (
        second["stats"])


def test_check_diff_on_a_converged_host_reports_no_change(converged) -> None:
    lab, inventory, first = converged
    assert first.rc == 0, first.tail()
    check = run_site(inventory, "--check", "--diff")
    assert check.rc == 0, check.tail()
    assert set(check.recap()) == {h.name for h in lab.hosts()}
    assert all(r["changed"] == 0 for r in check.recap().values()), check.tail(120)
    assert "--- before" not in check.output


def test_files_modes_and_local_fact(converged) -> None:
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        stat = lab.ssh(host, "stat -c '%n %U %G %a' /etc/waops/bots/shop.env /etc/waops/bots/shop.json "
                             "/var/backups/waops/shop /var/lib/waops/bots/shop/auth /usr/local/bin/waops-host "
                             "/usr/local/lib/waops-host/waops_host /usr/local/lib/waops-host/waops_host/cli.py",
                       check=True).split("\n")
        assert "/etc/waops/bots/shop.env root wa-shop 640" in stat
        assert "/etc/waops/bots/shop.json root root 600" in stat
        assert "/var/backups/waops/shop root root 700" in stat  # root's: the bot never writes backups
        assert "/var/lib/waops/bots/shop/auth wa-shop wa-shop 700" in stat
        assert "/usr/local/bin/waops-host root root 755" in stat
        # the agent's package: root's, nothing on its import path the bot user can write
        assert "/usr/local/lib/waops-host/waops_host root root 755" in stat
        assert "/usr/local/lib/waops-host/waops_host/cli.py root root 644" in stat
        path = lab.ssh(host, "python3 -I -c 'import sys; sys.path.insert(0, \"/usr/local/lib/waops-host\"); "
                             "import waops_host; print(waops_host.__file__); print(*sys.path)'", check=True)
        assert path.splitlines()[0] == "/usr/local/lib/waops-host/waops_host/__init__.py"
        writable = lab.ssh(host, "for d in " + path.splitlines()[1] + " /usr/local/bin; do "
                                 "runuser -u wa-shop -- test -w \"$d\" && echo \"$d\"; done; true", check=True)
        assert writable.strip() == "", writable
        config = json.loads(lab.ssh(host, "cat /etc/waops/bots/shop.json", check=True))
        assert config["service_manager"] == host.service_manager and config["user"] == "wa-shop"
        fact = json.loads(lab.ssh(host, "cat /etc/ansible/facts.d/waops_bot.fact", check=True))
        bot = fact["bots"]["shop"]
        current = lab.ssh(host, "readlink /opt/waops/bots/shop/current", check=True).strip()
        assert current == f"releases/{bot['current']}"
        assert bot["releases"][bot["current"]]["library"] == {"name": "baileys", "version": "6.7.18"}
        env = lab.ssh(host, "cat /etc/waops/bots/shop.env", check=True)
        assert 'WAOPS_SIM_URL="tcp://' in env and 'NODE_PATH="/opt/waops/lib/node_modules"' in env


def test_cron_entries_exist(converged) -> None:
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        cron = lab.ssh(host, "cat /etc/cron.d/waops-shop", check=True)
        assert "0 */6 * * * root /usr/local/bin/waops-host backup --bot shop --reason cron" in cron
        assert "*/5 * * * * root /usr/local/bin/waops-host check --bot shop" in cron


def test_health_check_as_cron_runs_it_sees_the_bot_up(converged) -> None:
    """The role's check line under cron's environment (the cron file's PATH, nothing else inherited): real
    pm2/systemd facts, no false alarm, the node_exporter metrics file (~2 s a host)."""
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        cron = lab.ssh(host, "cat /etc/cron.d/waops-shop", check=True).splitlines()
        path = next(ln.split("=", 1)[1].strip('"') for ln in cron if ln.startswith("PATH="))
        job = next(ln.split(" root ", 1)[1] for ln in cron if " check --bot shop " in ln)
        lab.ssh(host, f"env -i PATH={shlex.quote(path)} /bin/sh -c {shlex.quote(job)}", check=True)
        state = json.loads(lab.ssh(host, "cat /var/lib/waops/agent/check-shop.json", check=True))
        assert not [n for n, c in state["conditions"].items() if c.get("open")], state["conditions"]
        prom = lab.ssh(host, "cat /var/lib/node_exporter/textfile_collector/waops.prom", check=True)
        assert 'waops_process_up{bot="shop"} 1' in prom and 'waops_session_open{bot="shop"} 1' in prom, prom
        assert lab.ssh(host, "tail -n 1 /var/log/waops/waops-host.log").rstrip().endswith(" shop: ok")


KEEPALIVE_SOCKET = "/run/waops/keepalive-backup-shop.sock"
# The keep-alive agent's own socket client, run with the bot unit's hardening (NoNewPrivileges, no
# capabilities, read-only system): what the bot does after each keep-alive.
KEEPALIVE_REQUEST = (
    "systemd-run --quiet --wait --pipe --uid=wa-shop --gid=wa-shop -p NoNewPrivileges=yes -p ProtectSystem=strict "
    "-p PrivateTmp=yes -p CapabilityBoundingSet= node -e 'require(\"/opt/waops/lib/node_modules/waops-keepalive/"
    f"backup.js\").runSocket(\"{KEEPALIVE_SOCKET}\").then(r => console.log(JSON.stringify(r)))'"
)


def test_keepalive_backup_socket_serves_the_bot_user_only(converged) -> None:
    lab, _, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        env = lab.ssh(host, "cat /etc/waops/bots/shop.env", check=True)
        assert f'WAOPS_BACKUP_SOCKET="{KEEPALIVE_SOCKET}"' in env and 'WAOPS_KEEPALIVE_HOURS="12"' in env
        result = json.loads(lab.ssh(host, KEEPALIVE_REQUEST, check=True).strip().splitlines()[-1])
        assert result["ok"] and result["verified"] and result["id"], result
        listed = json.loads(lab.ssh(host, "waops-host list --bot shop --json", check=True))["results"][0]["backups"]
        assert {b["id"]: b["reason"] for b in listed}.get(result["id"]) == "keepalive"
        # The bot asking again at once gets the same backup back, not a new one (rate limit of the socket).
        again = json.loads(lab.ssh(host, KEEPALIVE_REQUEST, check=True).strip().splitlines()[-1])
        assert again["ok"] and again.get("skipped") and again["id"] == result["id"], again
        refused = lab.ssh(host, f"setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c 'import socket; "
                                f"socket.socket(socket.AF_UNIX).connect(\"{KEEPALIVE_SOCKET}\")' 2>&1; echo rc=$?")
        assert "PermissionError" in refused and "rc=1" in refused, refused


def test_bot_is_back_after_a_reboot(converged) -> None:
    from waops_lab.lab.container import wait_for_ssh

    lab, _, first = converged
    assert first.rc == 0, first.tail()
    hosts = lab.hosts()
    before = {h.name: health(lab, h).get("session_started_at") for h in hosts}
    for host in hosts:
        lab.ssh(host, "systemctl reboot")
    time.sleep(3)
    for host in hosts:
        wait_for_ssh(host.ip, lab.image.key, lab.known_hosts, timeout=120)
    for host in hosts:
        assert wait_until(lambda h=host: bot_running(lab, h) and health(lab, h).get("connection") == "open"
                          and health(lab, h).get("session_started_at") != before[h.name], 90), host.name
