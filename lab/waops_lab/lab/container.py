"""One lab host: an overlay clone of the image booted by systemd-nspawn (systemd as PID 1) on the bridge.

A small shell loop around systemd-nspawn boots the container again when it asks for a reboot (exit
133), so `systemctl reboot` inside a host behaves like a real machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from waops_host.process import pid_alive as _alive
from waops_lab.errors import LabError
from waops_lab.lab.shell import ok, run

_BOOT_LOOP = r"""
root=$1 name=$2 bridge=$3 dir=$4; shift 4
while :; do
  systemd-nspawn -q -D "$root" -M "$name" --boot --network-bridge="$bridge" --register=no --keep-unit "$@" &
  echo $! > "$dir/nspawn.pid"; wait $!; rc=$?
  [ $rc -eq 133 ] || exit $rc
done
"""


def nesting_args(cache_dir: Path, inner_cache: Path, inner_runtime: Path) -> tuple[str, ...]:
    """What a host needs to run a lab of its own (systemd-nspawn inside systemd-nspawn), for the test of
    the README's commands on a fresh machine: every capability (the inner lab makes a bridge, an nftables
    table and overlay mounts, and nspawn itself needs them), a tmpfs for the inner lab's overlays (an
    overlay's upper directory cannot be on the host's own overlay root), and this machine's image cache
    seen copy-on-write (a tmpfs takes the writes), so the inner lab builds no image. Test hosts only."""
    return ("--capability=all", f"--tmpfs={inner_runtime}:mode=0755",
            f"--overlay={cache_dir}::{inner_cache}")


class Container:
    def __init__(self, name: str, ip: str, gateway: str, bridge: str, root: Path, image: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name, self.ip, self.gateway, self.bridge = name, ip, gateway, bridge
        self.dir = root
        self.image = image
        self.extra_args = extra_args  # more systemd-nspawn options (nesting_args)
        self.merged = root / "merged"

    # -- lifecycle -------------------------------------------------------------------------------
    def prepare(self) -> str:
        """Mount the overlay and personalise it; returns this host's known_hosts line."""
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not ok(["mountpoint", "-q", str(self.merged)]):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.image},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
                 str(self.merged)])
        m = self.merged
        (m / "etc/hostname").write_text(self.name + "\n")
        (m / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        nameserver = _upstream_nameserver()
        if nameserver:
            resolv = m / "etc/resolv.conf"
            resolv.unlink(missing_ok=True)
            resolv.write_text(f"nameserver {nameserver}\n")
        net_dir = m / "etc/systemd/network"
        net_dir.mkdir(parents=True, exist_ok=True)
        (net_dir / "10-host0.network").write_text(
            f"[Match]\nName=host0\n[Network]\nAddress={self.ip}/24\nGateway={self.gateway}\n")
        # The machine's CAs (the registries' TLS proxy among them), copied at boot, never baked.
        for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(crt, m / "usr/local/share/ca-certificates" / crt.name)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", m / "etc/ssl/certs/ca-certificates.crt")
        key = m / "etc/ssh/ssh_host_ed25519_key"
        if not key.exists():
            # This host's own key. Only ed25519: `ssh-keygen -A` would add an RSA key whose generation
            # costs ~0.6 s of CPU per host, and known_hosts holds only the ed25519 key anyway.
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", str(key)])
        (m / "etc/ssh/sshd_config.d/waops-hostkey.conf").write_text(f"HostKey /etc/ssh/{key.name}\n")
        pub = key.with_suffix(".pub").read_text().split()
        return f"{self.ip} {pub[0]} {pub[1]}"

    def start(self) -> None:
        console = open(self.dir / "console.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["bash", "-c", _BOOT_LOOP, "_", str(self.merged), self.name, self.bridge, str(self.dir),
             *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)
        console.close()
        (self.dir / "loop.pid").write_text(str(proc.pid))

    def running(self) -> bool:
        pid = _read_pid(self.dir / "loop.pid")
        return pid is not None and _alive(pid)

    def power_off(self) -> None:
        """Pull the plug: SIGKILL systemd-nspawn and its boot loop, no shutdown inside; the disk (the
        overlay) stays, so `start()` boots the same host again."""
        nspawn = _read_pid(self.dir / "nspawn.pid")
        # the container's PID 1 first: killing nspawn alone leaves it (and the whole host) running;
        # SIGKILL to a PID namespace's init ends every process in it at once
        for pid in _children(nspawn) if nspawn else []:
            _signal(pid, signal.SIGKILL)
        for pid_file in ("loop.pid", "nspawn.pid"):
            pid = _read_pid(self.dir / pid_file)
            if pid and _alive(pid):
                _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        loop_pid = _read_pid(self.dir / "loop.pid")
        if loop_pid and _alive(loop_pid):
            nspawn_pid = _read_pid(self.dir / "nspawn.pid")
            # before nspawn can go and orphan them; with their start times, so a reused pid is never hit
            inits = [(p, _started(p)) for p in (_children(nspawn_pid) if nspawn_pid else [])]
            if nspawn_pid:
                _signal(nspawn_pid, signal.SIGTERM)  # nspawn asks systemd inside for a clean poweroff
            deadline = time.monotonic() + timeout
            while (_alive(loop_pid) or any(_same(p) for p in inits)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(loop_pid):  # the shutdown hangs inside: pull the plug, the container's init first
                self.power_off()
            for init in inits:  # nspawn gone but its init left running: end it (and its whole namespace)
                if _same(init):
                    _signal(init[0], signal.SIGKILL)
            # a killed namespace init exits only once the kernel has ended every process in it
            deadline = time.monotonic() + 30
            while any(_same(p) for p in inits) and time.monotonic() < deadline:
                time.sleep(0.1)
        if ok(["mountpoint", "-q", str(self.merged)]):
            run(["umount", str(self.merged)], check=False)
            if ok(["mountpoint", "-q", str(self.merged)]):
                run(["umount", "-l", str(self.merged)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(Path("/run/systemd/nspawn/propagate") / self.name, ignore_errors=True)


def _upstream_nameserver() -> str | None:
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                return parts[1]
    except OSError:
        pass
    return None


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid with another
    start time is another process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same(proc: tuple[int, str | None]) -> bool:
    """The process recorded as (pid, start time) still runs (not a zombie, not a reused pid)."""
    return _alive(proc[0]) and _started(proc[0]) == proc[1]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = next(ln for ln in (d / "status").read_text().splitlines() if ln.startswith("PPid:"))
                if int(ppid.split()[1]) == pid:
                    out.append(int(d.name))
    return out


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None




def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_for_port(ip: str, port: int, deadline: float) -> bool:
    """Poll a TCP port with short connect attempts. An ssh with ConnectTimeout=2 started before the
    host's interface is up waits out the whole ARP timeout; a 0.2 s probe retries at once instead."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_for_ssh(ip: str, key: Path, known_hosts: Path, timeout: float = 60.0) -> str:
    """Wait until systemd inside answers over real SSH (strict host-key checking). Returns its state."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not wait_for_port(ip, 22, deadline):
            last = last or "port 22 never answered"
            break
        proc = subprocess.run(
            ["ssh", *ssh_options(key, known_hosts), f"root@{ip}", "systemctl is-system-running --wait"],
            capture_output=True, text=True, timeout=timeout)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        last = (proc.stderr or state).strip()
        time.sleep(0.1)
    raise LabError(f"{ip} did not come up within {timeout:.0f}s ({last})")


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return ["-i", str(key), "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=2",
            "-o", "IdentitiesOnly=yes"]
