"""The lab's private bridge with NAT for egress (apt, npm, pip), and ip_forward restored afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from waops_lab.lab.shell import ok, run

_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class LabNetwork:
    def __init__(self, bridge: str, subnet_prefix: str, table: str, shared_dir: Path) -> None:
        self.bridge = bridge
        self.prefix = subnet_prefix  # e.g. "10.77.0"
        self.table = table
        self._forward_file = shared_dir / "ip_forward.json"  # shared by all labs on this machine

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    def up(self) -> None:
        if not ok(["ip", "link", "show", self.bridge]):
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        self._hold_forwarding()
        if not ok(["nft", "list", "table", "ip", self.table]):
            ruleset = f"""table ip {self.table} {{
  chain lab_nat {{
    type nat hook postrouting priority 100;
    ip saddr {self.prefix}.0/24 ip daddr != {self.prefix}.0/24 masquerade;
  }}
  chain lab_fwd {{
    type filter hook forward priority 0;
    iifname "{self.bridge}" accept;
    oifname "{self.bridge}" accept;
  }}
}}
"""
            run(["nft", "-f", "-"], input=ruleset)

    def close_ssh(self, except_ip: str) -> None:
        """This machine can no longer open SSH to the lab's hosts, except `except_ip` (the bastion).
        Host to host traffic is bridged, so the bastion still reaches them all."""
        run(["nft", "-f", "-"], input=f"""table ip {self.table} {{
  chain lab_out {{
    type filter hook output priority 0;
    ip daddr {self.prefix}.0/24 ip daddr != {except_ip} tcp dport 22 reject with tcp reset;
  }}
}}
""")

    def down(self) -> None:
        run(["nft", "delete", "table", "ip", self.table], check=False)
        run(["ip", "link", "del", self.bridge], check=False)
        self._release_forwarding()

    def exists(self) -> bool:
        return ok(["ip", "link", "show", self.bridge]) or ok(["nft", "list", "table", "ip", self.table])

    # ip_forward is machine-wide: remember the original value once, count the labs holding it.
    def _hold_forwarding(self) -> None:
        state = self._read_forward()
        if state is None:
            state = {"original": _IP_FORWARD.read_text().strip(), "holders": []}
        if self.bridge not in state["holders"]:
            state["holders"].append(self.bridge)
        self._forward_file.parent.mkdir(parents=True, exist_ok=True)
        self._forward_file.write_text(json.dumps(state))
        _IP_FORWARD.write_text("1\n")

    def _release_forwarding(self) -> None:
        state = self._read_forward()
        if state is None:
            return
        state["holders"] = [h for h in state["holders"] if h != self.bridge]
        if state["holders"]:
            self._forward_file.write_text(json.dumps(state))
            return
        _IP_FORWARD.write_text(state["original"] + "\n")
        self._forward_file.unlink(missing_ok=True)

    def _read_forward(self) -> dict | None:
        try:
            return json.loads(self._forward_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
