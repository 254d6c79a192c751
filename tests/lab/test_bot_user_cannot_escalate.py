"""The bot user, with a shell on a provisioned host (pm2 and systemd), tries every path through which
waops' root agent touches its files (docs/THREAT-MODEL.md): links at its auth folder, health file and pm2
log, a FIFO for pm2's pid file, the keep-alive backup socket, root's locks and backups. Then root's agent
runs as cron, the check, the keep-alive socket and a restore do. Nothing root-only may come out, nothing
outside the bot user's own directories may change. One lab, two hosts, one converge."""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Iterator

import pytest

from tests.lab.test_provision_support import run_site

pytestmark = pytest.mark.lab

LAB_NAME = "t-hostile"
SECRET = f"root-only-{secrets.token_hex(8)}"
STATE = "/var/lib/waops/bots/shop"
PM2 = f"PATH=/usr/local/bin:/usr/bin:/bin PM2_HOME={STATE}/.pm2"
# What the bot user does, with a shell: plant links and a FIFO, try root's lock and backups, then ask
# root for a backup through its keep-alive socket. Prints what each attempt gave.
ATTACK = f"""
import errno, json, os, socket
S = {STATE!r}
out = {{}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
os.rename(S + "/auth", S + "/auth.real")
os.symlink("/etc/waops", S + "/auth")
for p in (S + "/health.json", S + "/.pm2/logs/shop-out.log", S + "/.pm2/pm2.pid"):
    if os.path.lexists(p):
        os.unlink(p)
os.symlink("/etc/waops/zz-secret.json", S + "/health.json")
if os.path.isdir(S + "/.pm2/logs"):
    os.symlink("/etc/waops/zz-secret.json", S + "/.pm2/logs/shop-out.log")
    os.mkfifo(S + "/.pm2/pm2.pid")
attempt("lock", lambda: os.close(os.open("/run/waops/waops-shop.lock", os.O_RDWR | os.O_CREAT, 0o666)))
attempt("lock_dir_write", lambda: os.close(os.open("/run/waops/planted", os.O_WRONLY | os.O_CREAT, 0o666)))
attempt("backup_write", lambda: os.close(os.open("/var/backups/waops/shop/planted", os.O_WRONLY | os.O_CREAT)))
attempt("backup_list", lambda: os.listdir("/var/backups/waops/shop"))
attempt("agent_state", lambda: os.listdir("/var/lib/waops/agent"))
s = socket.socket(socket.AF_UNIX)
s.settimeout(180)
s.connect("/run/waops/keepalive-backup-shop.sock")
reply = b""
while chunk := s.recv(65536):
    reply += chunk
out["socket_reply"] = reply.decode("utf-8", "replace")
print(json.dumps(out))
"""
# Everything the bot user owns outside its own directories, and root's config tree with its checksums.
OUTSIDE = (rf"find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path {STATE} -o -path /opt/waops/bots/shop "
           r"\) -prune -o -user wa-shop -print | sort")
ETC = "find /etc/waops -xdev -printf '%p %U %G %m\\n' | sort; find /etc/waops -type f -exec sha256sum {} + | sort"


@pytest.fixture(scope="module")
def converged() -> Iterator[tuple]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    lab = _lab(LAB_NAME)
    try:
        inventory = lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
        first = run_site(inventory)
        yield lab, first
    finally:
        lab.down(log=lambda _m: None)


def as_bot(lab, host, script: str) -> str:
    return lab.ssh(host, f"su -s /bin/sh wa-shop -c {shlex.quote('python3 -c ' + shlex.quote(script))}",
                   check=True, timeout=300)


def test_the_bot_user_cannot_read_root_files_nor_write_outside_its_directories(converged) -> None:
    lab, first = converged
    assert first.rc == 0, first.tail()
    for host in lab.hosts():
        if host.service_manager == "systemd":
            lab.ssh(host, "systemctl stop waops-bot-shop.service", check=True)
        else:
            lab.ssh(host, f"su -s /bin/sh wa-shop -c '{PM2} pm2 stop shop'", check=True)
        lab.ssh(host, f"umask 077; echo '{{\"connection\": \"open\", \"token\": \"{SECRET}\"}}' "
                      "> /etc/waops/zz-secret.json", check=True)
        outside, etc = lab.ssh(host, OUTSIDE, check=True), lab.ssh(host, ETC, check=True)

        tried = json.loads(as_bot(lab, host, ATTACK).strip().splitlines()[-1])
        assert {k: tried[k] for k in ("lock", "lock_dir_write", "backup_write", "backup_list", "agent_state")} == {
            "lock": "EACCES", "lock_dir_write": "EACCES", "backup_write": "EACCES", "backup_list": "EACCES",
            "agent_state": "EACCES"}, (host.name, tried)
        outputs = [tried["socket_reply"]]
        # root's agent as cron, the check, the playbooks run it: none may hang, leak or write through a link
        for cmd in ("backup --bot shop --reason cron --json", "facts --json", "check --bot shop --json",
                    "list --bot shop --json", "verify --bot shop --json",
                    "restore --bot shop --latest-verified --json", "backup --bot shop --json"):
            out = lab.ssh(host, f"timeout 120 waops-host {cmd} 2>&1; echo rc=$?", timeout=180)
            assert "Traceback" not in out and "rc=124" not in out, (host.name, cmd, out)
            outputs.append(out)
        for out in outputs:
            assert SECRET not in out, host.name
        assert lab.ssh(host, f"grep -rl {SECRET} /var/backups/waops /var/lib/waops/agent /run/waops; echo rc=$?"
                       ).strip() == "rc=1", host.name
        assert lab.ssh(host, ETC, check=True) == etc, host.name  # root's config: not a byte, owner or mode changed
        assert lab.ssh(host, OUTSIDE, check=True) == outside, host.name
        stat = lab.ssh(host, "stat -c '%n %U %a' /var/backups/waops/shop /run/waops /run/waops/waops-shop.lock",
                       check=True).split("\n")
        assert stat[:3] == ["/var/backups/waops/shop root 700", "/run/waops root 711",
                            "/run/waops/waops-shop.lock root 600"], stat
