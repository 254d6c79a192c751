"""The lab as a whole: settings, bring-up, status, teardown, and the inventory it writes.

Everything the lab makes lives under its runtime directory and is listed in its state file, so `down`
can remove exactly that: containers and their mounts, the bridge and its nftables table, the
PostgreSQL instance, the simulator, and ip_forward as it was."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from waops_host.process import pid_alive as _pid_alive
from waops_lab import group_vars_dir, sandbox_bot_dir
from waops_lab.errors import LabError
from waops_lab.lab.container import Container, nesting_args, ssh_options, wait_for_ssh
from waops_lab.lab.image import Image
from waops_lab.lab.network import LabNetwork
from waops_lab.lab.postgres import LabPostgres
from waops_lab.lab.shell import run

SIM_PORT = 7800
BASTION_OCTET = 5  # the bastion's address: <lab prefix>.5
PG_PORT = 5432
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,11}$")


@dataclass(frozen=True)
class LabSettings:
    name: str = "default"
    cache_dir: Path = Path("/var/cache/waops-lab")
    runtime_root: Path = Path("/var/tmp/waops-lab")
    link_delay: float = 2.0
    nesting: bool = False  # hosts that can run a lab themselves (container.nesting_args); tests only

    @classmethod
    def from_env(cls, name: str | None = None) -> LabSettings:
        return cls(
            name=name or os.environ.get("WAOPS_LAB_NAME", "default"),
            cache_dir=Path(os.environ.get("WAOPS_LAB_CACHE", "/var/cache/waops-lab")),
            runtime_root=Path(os.environ.get("WAOPS_LAB_DIR", "/var/tmp/waops-lab")),
        )

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise LabError(f"lab name {self.name!r}: use 1-12 of a-z, 0-9 and '-'")

    @property
    def octet(self) -> int:
        # 10.77.<octet>.0/24 per lab, so several labs (parallel test runs) never share a subnet. The
        # name's hash is only the first choice: `up` claims a free octet and keeps it in the lab's
        # directory (Lab._claim_subnet), so two names that hash alike never share a bridge subnet.
        if self.name == "default":
            return 0
        try:
            return int((self.dir / "octet").read_text())
        except (OSError, ValueError):
            return _hash_octet(self.name)

    @property
    def prefix(self) -> str:
        return f"10.77.{self.octet}"

    @property
    def bridge(self) -> str:
        return f"wl-{self.name}"[:15]

    @property
    def nft_table(self) -> str:
        return "waops_lab_" + self.name.replace("-", "_")

    @property
    def control_port(self) -> int:
        return 17800 + self.octet

    @property
    def dir(self) -> Path:
        return self.runtime_root / self.name


@dataclass
class LabHost:
    name: str
    ip: str
    index: int
    service_manager: str
    bots: list[dict] = field(default_factory=list)


class Lab:
    def __init__(self, settings: LabSettings | None = None) -> None:
        self.settings = settings or LabSettings.from_env()
        s = self.settings
        self.image = Image(s.cache_dir)
        self._wire()
        self.known_hosts = s.dir / "known_hosts"
        # the lab's user CA (every host trusts it) and a root key signed by it (no authorized_keys entry)
        self.user_ca = s.dir / "user_ca"
        self.cert_key = s.dir / "id_cert"
        self.inventory_dir = s.dir / "inventory"
        self.state_file = s.dir / "state.json"
        self.last_boot: dict[str, float] = {}

    def _wire(self) -> None:
        s = self.settings
        self.network = LabNetwork(s.bridge, s.prefix, s.nft_table, s.runtime_root)
        self.postgres = LabPostgres(s.dir / "pg", s.prefix + ".1", PG_PORT, f"{s.prefix}.0/24")

    def _claim_subnet(self) -> None:
        """Pick this lab's subnet octet (first choice: the name's hash) among those no other lab and no
        interface uses, under a lock shared by all labs, and keep it in the lab's directory."""
        s = self.settings
        if s.name == "default" or (s.dir / "octet").exists():
            return
        s.runtime_root.mkdir(parents=True, exist_ok=True)
        with open(s.runtime_root / ".subnets.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            used = _octets_in_use(s.runtime_root, s.name)
            first = _hash_octet(s.name)
            free = [o for o in ((first - 1 + k) % 250 + 1 for k in range(250)) if o not in used]
            if not free:
                raise LabError("no free lab subnet left in 10.77.1-250.0/24")
            s.dir.mkdir(parents=True, exist_ok=True)
            (s.dir / "octet").write_text(f"{free[0]}\n")
        self._wire()

    # -- state -----------------------------------------------------------------------------------
    def hosts(self) -> list[LabHost]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [LabHost(**h) for h in data.get("hosts", [])]

    def host(self, name: str) -> LabHost:
        for h in self.hosts():
            if h.name == name or h.ip == name:
                return h
        raise LabError(f"no lab host {name!r} in lab {self.settings.name!r} (see `waops lab status`)")

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def bastion(self) -> LabHost | None:
        """The bastion host, when the lab's hosts are reachable only through one."""
        b = self._state().get("bastion")
        return LabHost(**b) if b else None

    @property
    def uses_certificate(self) -> bool:
        return bool(self._state().get("certificate"))

    def _save(self, hosts: list[LabHost], bastion: LabHost | None = None, certificate: bool | None = None) -> None:
        self.settings.dir.mkdir(parents=True, exist_ok=True)
        old = self._state()
        b = bastion or self.bastion()
        data = {"name": self.settings.name, "hosts": [asdict(h) for h in hosts],
                "bastion": asdict(b) if b else None,
                "certificate": old.get("certificate", False) if certificate is None else certificate,
                "sim_url": self.sim_url, "control_url": self.control_url}
        self.state_file.write_text(json.dumps(data, indent=2))

    @property
    def host_prefix(self) -> str:
        return "lab" if self.settings.name == "default" else self.settings.name

    @property
    def sim_url(self) -> str:
        return f"tcp://{self.settings.prefix}.1:{SIM_PORT}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.control_port}"

    def container(self, host: LabHost) -> Container:
        s = self.settings
        inner = LabSettings()  # the paths a lab inside the host uses: the defaults
        extra = nesting_args(s.cache_dir, inner.cache_dir, inner.runtime_root) if s.nesting else ()
        return Container(host.name, host.ip, self.network.gateway, s.bridge, s.dir / "ct" / host.name,
                         self.image.rootfs, extra)

    # -- bring-up --------------------------------------------------------------------------------
    def up(self, count: int = 1, managers: tuple[str, ...] = ("pm2", "systemd"),
           log: Callable[[str], None] = print, bastion: bool = False, certificate: bool = False) -> Path:
        """Boot COUNT hosts (added to any already up), the simulator and PostgreSQL. Returns the inventory.

        bastion: one more host, `<lab>-bastion`, is the only one this machine may reach over SSH (the
        others' port 22 is closed to it by the lab's nftables table); the inventory goes through it with
        a ProxyCommand, as Ansible's FAQ does. certificate: the inventory logs in with a key that no
        authorized_keys lists, only its certificate signed by the lab's user CA."""
        if count < 1 or count > 60:
            raise LabError("--hosts must be between 1 and 60")
        if self.bastion() or (bastion and self.hosts()):
            raise LabError("a lab behind a bastion is brought up in one go (its hosts are closed to this machine)")
        self.image.ensure(log)
        s = self.settings
        s.dir.mkdir(parents=True, exist_ok=True)
        self._claim_subnet()
        existing = self.hosts()
        try:
            self.network.up()
            start = len(existing) + 1
            new = [LabHost(name=f"{self.host_prefix}-{i}",
                           ip=f"{s.prefix}.{10 + i}", index=i,
                           service_manager=managers[(i - 1) % len(managers)],
                           bots=[{"name": "shop", "phone": f"1555010{s.octet:03d}{i:02d}"}])
                   for i in range(start, start + count)]
            gate = (LabHost(name=f"{self.host_prefix}-bastion", ip=f"{s.prefix}.{BASTION_OCTET}", index=0,
                            service_manager="none") if bastion else None)
            self._save(existing + new, gate, certificate or None)
            # PostgreSQL and the simulator start while the hosts boot: nothing in a host's boot needs
            # them, and each costs about a second of wall time on its own.
            with ThreadPoolExecutor(max_workers=2) as pool:
                services = [pool.submit(self.postgres.start), pool.submit(self._start_simulator)]
                self.boot(new + ([gate] if gate else []), log)
                for f in services:
                    f.result()
            if gate:
                self.network.close_ssh(except_ip=gate.ip)
        except BaseException:
            log("lab bring-up failed; removing what it made")
            self.down(log=lambda _m: None)
            raise
        return self.write_inventory()

    def boot(self, hosts: list[LabHost], log: Callable[[str], None] = print) -> dict[str, float]:
        """Boot hosts in parallel; returns seconds to SSH-ready per host, counted from the start of
        their preparation (overlay mount, host key). `last_boot` keeps the phases for the bench."""
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(hosts)))) as pool:
            lines = list(pool.map(lambda h: self.container(h).prepare(), hosts))
        self._add_known_hosts(lines)
        self._trust_user_ca(hosts)
        prepared = time.monotonic()
        for h in hosts:
            self.container(h).start()

        def wait(h: LabHost) -> tuple[str, float]:
            state = wait_for_ssh(h.ip, self.image.key, self.known_hosts, timeout=90)
            if state != "running":
                log(f"{h.name}: systemd is {state}: " + self.ssh(h, "systemctl --failed --no-legend "
                                                                  "--plain | cut -d' ' -f1 | xargs").strip())
            return h.name, time.monotonic() - t0

        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            timings = dict(pool.map(wait, hosts))
        self.last_boot = {"hosts": len(hosts), "prepare_s": prepared - t0, "total_s": time.monotonic() - t0}
        for name, secs in timings.items():
            log(f"{name} up in {secs:.1f}s")
        return timings

    def _add_known_hosts(self, lines: list[str]) -> None:
        keep: list[str] = []
        if self.known_hosts.exists():
            ips = {line.split()[0] for line in lines}
            keep = [ln for ln in self.known_hosts.read_text().splitlines() if ln.split()[:1] and
                    ln.split()[0] not in ips]
        self.known_hosts.write_text("\n".join(keep + lines) + "\n")
        self.known_hosts.chmod(0o644)

    def _trust_user_ca(self, hosts: list[LabHost]) -> None:
        """Every host trusts the lab's user CA (TrustedUserCAKeys); the CA signs `cert_key` for root."""
        if not self.user_ca.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "waops lab user CA", "-f", str(self.user_ca)])
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "waops lab certificate key",
                 "-f", str(self.cert_key)])
            run(["ssh-keygen", "-q", "-s", str(self.user_ca), "-I", f"waops-lab-{self.settings.name}", "-n", "root",
                 "-V", "-5m:+30d", str(self.cert_key) + ".pub"])
        ca = self.user_ca.with_suffix(".pub").read_text()
        for h in hosts:
            etc = self.container(h).merged / "etc/ssh"
            (etc / "waops_user_ca.pub").write_text(ca)
            (etc / "sshd_config.d/waops-user-ca.conf").write_text("TrustedUserCAKeys /etc/ssh/waops_user_ca.pub\n")

    def _start_simulator(self) -> None:
        pid_file = self.settings.dir / "sim.pid"
        if pid_file.exists() and _pid_alive(int(pid_file.read_text())):
            return
        log = open(self.settings.dir / "sim.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "waops_lab.sandbox", "serve",
             "--listen", f"{self.settings.prefix}.1:{SIM_PORT}",
             "--control", f"127.0.0.1:{self.settings.control_port}",
             "--state", str(self.settings.dir / "sim-state.json"),
             "--link-delay", str(self.settings.link_delay)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"simulator exited ({proc.returncode}); see {self.settings.dir / 'sim.log'}")
            try:
                with urllib.request.urlopen(self.control_url + "/status", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise LabError("simulator did not answer on its control port")

    # -- inventory -------------------------------------------------------------------------------
    def write_inventory(self) -> Path:
        """An Ansible inventory of the lab that `ansible-playbook playbooks/site.yml` uses as it is."""
        inv = self.inventory_dir
        inv.mkdir(parents=True, exist_ok=True)
        gate = self.bastion()
        key = self.cert_key if self.uses_certificate else self.image.key
        common = (f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
        if gate:
            # Ansible's FAQ recipe: the bastion hop is an ssh of its own, checked against the same known_hosts
            common += f' -o ProxyCommand="{self.proxy_command(gate, key)}"'
        hosts = {
            h.name: {"ansible_host": h.ip, "waops_service_manager": h.service_manager,
                     "waops_bots": [dict(b, service_manager=h.service_manager) for b in h.bots]}
            for h in self.hosts()
        }
        doc = {"all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": common,
                "waops_known_hosts_file": str(self.known_hosts),
                "waops_lab_name": self.settings.name,
                "waops_sim_url": self.sim_url,
                # The lab's bots run the sandbox bot, and verification sends its test message through
                # the simulator; a production inventory names its own source and hook (or none).
                "waops_bot_source": {"type": "dir", "path": str(sandbox_bot_dir())},
                "waops_verify_roundtrip_command": (f"{shlex.quote(sys.executable)} -m waops_lab.sandbox.roundtrip "
                                                   f"--control {self.control_url}"),
                "waops_pg_host": self.postgres.listen,
                "waops_pg_port": PG_PORT,
                "waops_pg_db": "waops",
                "waops_pg_user": "waops",
                # lab-only secret: the file is 0600 and removed by `lab down`
                "waops_pg_password": self.postgres.password,
            },
            "children": {"waops_bot_hosts": {"hosts": hosts}},
        }}
        hosts_file = inv / "hosts.yml"
        hosts_file.write_text(json.dumps(doc, indent=2) + "\n")  # JSON is valid YAML
        hosts_file.chmod(0o600)
        link = inv / "group_vars"
        if not link.exists():
            link.symlink_to(group_vars_dir())
        return inv

    # -- use -------------------------------------------------------------------------------------
    def proxy_command(self, gate: LabHost, key: Path, known_hosts: Path | None = None) -> str:
        return (f"ssh -W %h:%p -i {key} -o UserKnownHostsFile={known_hosts or self.known_hosts} "
                "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=5 "
                f"root@{gate.ip}")

    def ssh_argv(self, host: LabHost, command: str) -> list[str]:
        gate = self.bastion()
        via = ["-o", "ProxyCommand=" + self.proxy_command(gate, self.image.key)] if gate else []
        return ["ssh", *ssh_options(self.image.key, self.known_hosts), *via, f"root@{host.ip}", command]

    def ssh(self, host: LabHost, command: str, check: bool = False, timeout: float = 60) -> str:
        proc = subprocess.run(self.ssh_argv(host, command), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"{host.name}: `{command}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def power_off(self, host: LabHost) -> None:
        """A hard power loss of one host (no clean shutdown); `power_on` boots it again."""
        self.container(host).power_off()

    def power_on(self, host: LabHost, timeout: float = 90) -> str:
        self.container(host).start()
        return wait_for_ssh(host.ip, self.image.key, self.known_hosts, timeout=timeout)

    def status(self) -> list[dict]:
        rows = []
        for h in self.hosts():
            c = self.container(h)
            rows.append({"name": h.name, "ip": h.ip, "service_manager": h.service_manager,
                         "running": c.running(), "bots": [b["name"] for b in h.bots]})
        return rows

    # -- teardown --------------------------------------------------------------------------------
    def down(self, log: Callable[[str], None] = print) -> None:
        s = self.settings
        ct_root = s.dir / "ct"
        gate = self.bastion()
        self._close_masters([h.ip for h in self.hosts()] + ([gate.ip] if gate else []))
        names = {h.name for h in self.hosts()}
        if ct_root.is_dir():
            names |= {p.name for p in ct_root.iterdir()}
        def stop(name: str) -> str:
            Container(name, "", "", s.bridge, ct_root / name, self.image.rootfs).stop()
            return name

        # in parallel: each host's clean poweroff is mostly waiting (~0.5 s each)
        with ThreadPoolExecutor(max_workers=8) as pool:
            for name in pool.map(stop, sorted(names)):
                log(f"{name} removed")
        pid_file = s.dir / "sim.pid"
        if pid_file.exists():
            _kill_group(int(pid_file.read_text()))
        self.postgres.stop()
        self.network.down()
        shutil.rmtree(s.dir, ignore_errors=True)
        log(f"lab {s.name} is down")

    @staticmethod
    def _close_masters(ips: list[str]) -> None:
        """End the SSH connection masters (Ansible's and the probe's, ControlPersist) to these hosts: a
        lab brought up next with the same addresses must not be reached through a dead one."""
        from waops.inventory import Host
        from waops.openssh import control_path

        for ip in ips:
            sock = Path(control_path(Host(name=ip, address=ip, user="root")))
            if sock.exists():
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", ip], capture_output=True,
                               timeout=10, check=False)

    def leftovers(self) -> list[str]:
        """What of this lab still exists on the machine (empty after a clean `down`)."""
        s = self.settings
        found = []
        if s.dir.exists():
            found.append(f"directory {s.dir}")
        if self.network.exists():
            found.append(f"bridge/nft {s.bridge}/{s.nft_table}")
        mounts = Path("/proc/mounts").read_text()
        if f" {s.dir}/" in mounts or f" {s.dir} " in mounts:  # not bench16 for lab bench
            found.append("overlay mounts")
        pattern = f"(-M {self.host_prefix}-[0-9]|waops_lab.sandbox serve .*--state {s.dir}/)"
        procs = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        if procs:
            found.append(f"processes {procs}")
        return found


def _hash_octet(name: str) -> int:
    return 1 + zlib.crc32(name.encode()) % 250


def _octets_in_use(runtime_root: Path, me: str) -> set[int]:
    """Octets claimed by the other labs here (their file, else their name's hash) or on any interface."""
    used: set[int] = set()
    for d in runtime_root.iterdir():
        if d.is_dir() and d.name != me and _NAME_RE.match(d.name):
            try:
                used.add(int((d / "octet").read_text()))
            except (OSError, ValueError):
                used.add(0 if d.name == "default" else _hash_octet(d.name))
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    used |= {int(m) for m in re.findall(r"inet 10\.77\.(\d+)\.", addrs)}
    return used


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(30):
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
