"""Off-host copies on real lab hosts: host A runs the bot (provisioned by site.yml with an SFTP
repository on host C), each backup lands on C, and when C stops answering the backup job fails loudly,
the check alerts, and A's local backups stay whole."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.lab.test_provision_support import health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

AGENT = "/usr/local/bin/waops-host"


def agent(lab, host, args: str, timeout: float = 300) -> tuple[int, dict, str]:
    proc = subprocess.run(lab.ssh_argv(host, f"{AGENT} {args} --bot shop --json"), capture_output=True,
                          text=True, timeout=timeout)
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, doc, proc.stderr


def test_backups_go_to_host_c_and_an_unreachable_repository_fails_loudly(lab_factory, tmp_path: Path) -> None:
    lab = lab_factory("t-offhost", 2)
    inventory = lab.inventory_dir
    a, c = lab.hosts()
    # host C: an SFTP account that holds the repositories, reached with a key made for this bot only
    key = tmp_path / "restic-shop"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "restic-shop.pub").read_text().strip()
    lab.ssh(c, "useradd --system --create-home --home-dir /srv/restic --shell /bin/sh restic && "
               "install -d -o restic -g restic -m 0700 /srv/restic/.ssh && "
               f"echo '{pub}' > /srv/restic/.ssh/authorized_keys && "
               "chown restic:restic /srv/restic/.ssh/authorized_keys && chmod 0600 /srv/restic/.ssh/authorized_keys",
            check=True)
    known = [ln for ln in lab.known_hosts.read_text().splitlines() if ln.split()[:1] == [c.ip]]
    password = secrets.token_urlsafe(24)
    extra = tmp_path / "offhost.json"
    extra.write_text(json.dumps({
        "waops_host_offhost_repository": f"sftp:restic@{c.ip}:/srv/restic",
        "waops_host_offhost_passwords": {"shop": password},
        "waops_host_offhost_ssh_keys": {"shop": key.read_text()},
        "waops_host_offhost_ssh_known_hosts": "\n".join(known),
    }))
    extra.chmod(0o600)
    run = run_site(inventory, "--limit", a.name, "-e", f"@{extra}")
    assert run.rc == 0, run.tail()
    assert password not in run.output
    assert wait_until(lambda: health(lab, a).get("connection") == "open", 90), health(lab, a)
    # the role made the repository on C; secrets are root's 0600 files on A
    assert lab.ssh(c, "test -f /srv/restic/shop/config && echo yes").strip() == "yes"
    modes = lab.ssh(a, "stat -c '%U %a' /etc/waops/bots/shop.restic-pass /etc/waops/bots/shop.restic-ssh")
    assert modes.split() == ["root", "600", "root", "600"], modes
    assert "waops offhost check shop" in lab.ssh(a, "cat /etc/cron.d/waops-shop")

    rc, doc, err = agent(lab, a, "backup --reason manual")
    first = doc["results"][0]
    assert rc == 0 and first["offhost"]["ok"], err
    rc, doc, err = agent(lab, a, "offhost list")
    assert rc == 0 and [b["id"] for b in doc["results"][0]["backups"]] == [first["id"]], err
    rc, doc, err = agent(lab, a, "offhost check")
    assert rc == 0 and doc["results"][0]["ok"], err
    rc, doc, _ = agent(lab, a, "check --metrics-file /run/waops-test.prom")
    assert "offhost_failed" not in doc["results"][0]["active"] and "offhost_stale" not in doc["results"][0]["active"]
    assert 'waops_offhost_last_ok{bot="shop"} 1' in lab.ssh(a, "cat /run/waops-test.prom")

    # C stops answering: the backup job fails loudly, the check alerts, the local copies stay
    lab.ssh(c, "systemctl stop ssh.socket ssh.service; true", timeout=30)
    rc, doc, err = agent(lab, a, "backup --reason manual")
    second = doc["results"][0]
    assert rc == 1 and second["verified"] and second["offhost"]["ok"] is False, (rc, doc, err)
    assert "off-host copy failed (local backups kept)" in err and password not in err + json.dumps(doc)
    rc, doc, err = agent(lab, a, "list")
    assert [b["id"] for b in doc["results"][0]["backups"]] == [second["id"], first["id"]]
    assert all(b["verified"] for b in doc["results"][0]["backups"])
    rc, doc, _ = agent(lab, a, "check --metrics-file /run/waops-test.prom")
    assert rc == 1 and "offhost_failed" in doc["results"][0]["active"], doc
    assert 'waops_offhost_last_ok{bot="shop"} 0' in lab.ssh(a, "cat /run/waops-test.prom")
