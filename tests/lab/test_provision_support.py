"""Helpers for the provisioning tests and bench (no tests here): run site.yml on a lab, read what it did."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from waops.assets import asset_root

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    rc: int
    seconds: float
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
                for m in _RECAP.finditer(self.output)}

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def run_site(inventory: Path, *extra: str, timeout: float = 1200) -> PlaybookRun:
    """ansible-playbook playbooks/site.yml from the repo (its ansible.cfg), output kept for the asserts."""
    root = asset_root()
    env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    started = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(root / "playbooks" / "site.yml"), *extra],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    return PlaybookRun(proc.returncode, time.monotonic() - started, proc.stdout + proc.stderr)


def pm2_processes(lab, host, bot: str = "shop") -> list[dict]:
    """`pm2 jlist` of the bot's own pm2 daemon (PM2_HOME per CONTRACTS.md)."""
    out = lab.ssh(host, f"su -s /bin/sh wa-{bot} -c 'PATH=/usr/local/bin:/usr/bin:/bin "
                        f"PM2_HOME=/var/lib/waops/bots/{bot}/.pm2 pm2 jlist'", check=True)
    line = [ln for ln in out.splitlines() if ln.startswith("[")][-1]
    return [p for p in json.loads(line) if p.get("name") == bot]


def bot_running(lab, host, bot: str = "shop") -> bool:
    """The bot's process is up under the host's manager, exactly once."""
    if host.service_manager == "systemd":
        return lab.ssh(host, f"systemctl is-active waops-bot-{bot}.service").strip() == "active"
    procs = pm2_processes(lab, host, bot)
    return len(procs) == 1 and procs[0]["pm2_env"]["status"] == "online"


def health(lab, host, bot: str = "shop") -> dict:
    out = lab.ssh(host, f"cat /var/lib/waops/bots/{bot}/health.json")
    return json.loads(out) if out.strip() else {}


def wait_until(predicate, timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # a host mid-reboot answers with all sorts of errors
            pass
        time.sleep(interval)
    return False
