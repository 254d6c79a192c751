"""A fleet behind a bastion, logged into with a user certificate: the probe and the playbooks agree.

One lab for the module: one bot host whose SSH is closed to this machine by the lab's nftables table
(open from the bastion), the inventory going through `<lab>-bastion` with a ProxyCommand in
ansible_ssh_common_args (Ansible's FAQ recipe), and a root key that no authorized_keys lists: only its
certificate, signed by the lab's user CA (TrustedUserCAKeys), logs in. `waops provision`, `diagnose
--all` and `recover` run as a person runs them. Every case that changes known_hosts gets its own
ControlPath directory: a live connection master is reused without a new host-key check, by design
(Ansible's too)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "t-bast"


@pytest.fixture(scope="module")
def blab() -> Iterator[Any]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    lab = _lab(LAB_NAME)
    try:
        lab.up(1, ("systemd",), log=lambda _m: None, bastion=True, certificate=True)
        yield lab
    finally:
        lab.down(log=lambda _m: None)


def _waops(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "waops", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})}, cwd=Path(__file__).parents[2])


def _diagnose(inventory: Path, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    p = _waops("diagnose", "-i", str(inventory), "--all", "--output", "json", "--timeout", "30", env=env)
    try:
        return p.returncode, json.loads(p.stdout)["results"]
    except (ValueError, KeyError):
        raise AssertionError(f"no JSON (rc {p.returncode}): {p.stdout[-800:]} {p.stderr[-1500:]}") from None


def _wait(inventory: Path, cause: str, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        _, rows = _diagnose(inventory)
        if rows and all(r["cause"] == cause for r in rows):
            return rows
        time.sleep(2)
    raise AssertionError(f"diagnosis stayed {[(r['cause'], r['evidence'][:2]) for r in rows]}, expected {cause}")


def _fingerprint(known_hosts: Path, ip: str) -> str:
    line = next(ln for ln in known_hosts.read_text().splitlines() if ln.split()[0] == ip)
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=line, capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def _variant(lab: Any, tmp: Path, known: str, *, jump: bool = False, key: Path | None = None) -> Path:
    """The lab's inventory with its own known_hosts (and optionally -J through an ssh_config, or a key)."""
    kh = tmp / "known_hosts"
    kh.write_text(known)
    doc = json.loads((lab.inventory_dir / "hosts.yml").read_text())
    v = doc["all"]["vars"]
    gate = lab.bastion()
    if jump:  # the other way Ansible users write it: -J, the hop's settings in an ssh config given with -F
        cfg = tmp / "ssh_config"
        cfg.write_text(f"Host {gate.ip}\n  User root\n  IdentityFile {lab.cert_key}\n  IdentitiesOnly yes\n"
                       f"  UserKnownHostsFile {kh}\n")
        v["ansible_ssh_common_args"] = (f"-F {cfg} -J root@{gate.ip} -o UserKnownHostsFile={kh} "
                                        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
    else:
        v["ansible_ssh_common_args"] = v["ansible_ssh_common_args"].replace(str(lab.known_hosts), str(kh))
    if key:
        v["ansible_ssh_private_key_file"] = str(key)
        v["ansible_ssh_common_args"] = v["ansible_ssh_common_args"].replace(str(lab.cert_key), str(key))
    v["waops_known_hosts_file"] = str(kh)
    inv = tmp / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text(json.dumps(doc))
    (inv / "group_vars").symlink_to(lab.inventory_dir / "group_vars")
    return inv


def test_the_hosts_are_closed_to_this_machine_and_open_from_the_bastion(blab: Any) -> None:
    host, gate = blab.hosts()[0], blab.bastion()
    with pytest.raises(OSError), socket.create_connection((host.ip, 22), timeout=5):
        pass
    socket.create_connection((gate.ip, 22), timeout=5).close()
    assert blab.ssh(host, "hostname", check=True).strip() == host.name  # the lab's own tools: through the bastion
    inv = json.loads((blab.inventory_dir / "hosts.yml").read_text())["all"]["vars"]
    assert f"root@{gate.ip}" in inv["ansible_ssh_common_args"] and "ProxyCommand=" in inv["ansible_ssh_common_args"]


def test_provision_diagnose_and_recover_go_through_the_bastion(blab: Any, tmp_path: Path) -> None:
    inventory = blab.inventory_dir
    p = _waops("provision", "-i", str(inventory), "--output", "json", timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert json.loads(p.stdout)["ok"]
    rows = _wait(inventory, "healthy", 180)
    assert [r["host"] for r in rows] == [blab.hosts()[0].name] and rows[0]["reachable"]

    from waops_lab.lab.faults import inject

    host = blab.hosts()[0]
    inject(blab, host.name, "process_down", "shop")
    _wait(inventory, "process_down")
    p = _waops("recover", "-i", str(inventory), host.name, "--bot", "shop", "--yes", "--output", "json",
               "--verify-timeout", "150", env={"WAOPS_STORE": str(tmp_path / "incidents.db")})
    res = json.loads(p.stdout)["results"][0]
    assert (p.returncode, res["cause"], res["outcome"]) == (0, "process_down", "resolved"), p.stderr[-2000:]
    _wait(inventory, "healthy")


@pytest.mark.parametrize("jump", [False, True], ids=["proxycommand", "proxyjump"])
def test_an_unknown_bastion_key_is_refused_with_its_fingerprint(blab: Any, tmp_path: Path, jump: bool) -> None:
    gate = blab.bastion()
    lines = blab.known_hosts.read_text().splitlines()
    inv = _variant(blab, tmp_path, "\n".join(ln for ln in lines if ln.split()[0] != gate.ip) + "\n", jump=jump)
    env = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    rc, rows = _diagnose(inv, env)
    fp = _fingerprint(blab.known_hosts, gate.ip)
    assert rc == 3 and not rows[0]["reachable"], rows
    assert rows[0]["fingerprint"] == fp and gate.ip in rows[0]["error"], rows[0]["error"]
    assert (tmp_path / "known_hosts").read_text().count(gate.ip) == 0  # nothing was added
    # with the bastion's key known, the same route works
    (tmp_path / "known_hosts").write_text(blab.known_hosts.read_text())
    rc, rows = _diagnose(inv, {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp2")})
    assert rows[0]["reachable"], rows


def test_the_certificate_logs_in_for_probe_and_playbooks_and_the_bare_key_does_not(blab: Any,
                                                                                   tmp_path: Path) -> None:
    host = blab.hosts()[0]
    pub = Path(str(blab.cert_key) + ".pub").read_text().split()[1]
    assert pub not in blab.ssh(host, "cat /root/.ssh/authorized_keys 2>/dev/null; true")
    cert = subprocess.run(["ssh-keygen", "-Lf", f"{blab.cert_key}-cert.pub"], capture_output=True, text=True,
                          check=True).stdout
    assert "user certificate" in cert and "root" in cert
    ping = subprocess.run(["ansible", "-i", str(blab.inventory_dir), "all", "-m", "ansible.builtin.ping"],
                          capture_output=True, text=True, timeout=300)
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout[-1500:]
    rc, rows = _diagnose(blab.inventory_dir)
    assert rows[0]["reachable"], rows
    # the same key without its certificate is refused by the bastion and the host alike
    bare = tmp_path / "bare" / "id_cert"
    bare.parent.mkdir()
    shutil.copy(blab.cert_key, bare)
    inv = _variant(blab, tmp_path, blab.known_hosts.read_text(), key=bare)
    env = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    rc, rows = _diagnose(inv, env)
    assert rc == 3 and not rows[0]["reachable"] and "Permission denied" in rows[0]["error"], rows
    ping = subprocess.run(["ansible", "-i", str(inv), "all", "-m", "ansible.builtin.ping"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})
    assert ping.returncode != 0 and "UNREACHABLE" in ping.stdout, ping.stdout[-1500:]
