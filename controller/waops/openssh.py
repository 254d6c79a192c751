"""OpenSSH as the probe's transport: the same `ssh` command line Ansible builds for the same host.

Everything OpenSSH and Ansible honour is honoured because it is the same program with the same
arguments: ~/.ssh/config, ProxyJump (chained), ProxyCommand, `-J`/`-o` in ansible_ssh_common_args and
ansible_ssh_extra_args, ssh-agent keys, user certificates (CertificateFile, `<key>-cert.pub`),
IdentitiesOnly, known_hosts. What waops adds is strictness and speed:

- StrictHostKeyChecking=yes and BatchMode=yes come first on the command line (OpenSSH keeps the first
  value it reads, so nothing later can weaken them) and, through a generated `-F` file that includes
  the user's config, on every ProxyJump hop too (ssh hands `-F` to the hops it starts). The process
  runs in its own session, without a terminal, so no hop can ask "are you sure" either.
- ControlMaster/ControlPersist with Ansible's own ControlPath (~/.ansible/cp/<hash>): a diagnose after
  a playbook, or a second diagnose within a minute, reuses the open connection (no handshake).
- A refused host key becomes HostKeyRefused with the offered SHA256 fingerprint and the host that
  offered it (a bastion's too): ssh is asked once more, verbosely, only after a refusal.

See docs/SSH.md for the choice against paramiko and its figures.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from waops.errors import UnreachableError
from waops.transport import MAX_OUTPUT, HostKeyRefused, Result

if TYPE_CHECKING:
    from waops.inventory import Host

SSH = "ssh"
# What the project's ansible.cfg sets as ssh_args (ANSIBLE_SSH_ARGS replaces it, as it does for Ansible).
DEFAULT_SSH_ARGS = "-o ControlMaster=auto -o ControlPersist=60s"
STRICT = ("-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes")
NO_PASSWORDS = ("-o", "KbdInteractiveAuthentication=no",
                "-o", "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
                "-o", "PasswordAuthentication=no")
SYSTEM_CONFIG = "/etc/ssh/ssh_config"


def split_args(text: str) -> list[str]:
    """Ansible's split of ansible_ssh_common_args / _extra_args (shell words)."""
    try:
        return [w for w in shlex.split(text) if w.strip()]
    except ValueError:
        return text.split()


def _user_config(args: list[str]) -> tuple[list[str], list[str]]:
    """(args without -F, the config files ssh would read): a `-F FILE` replaces ~/.ssh/config and the
    system file, as it does for ssh itself."""
    out: list[str] = []
    given: str | None = None
    k = 0
    while k < len(args):
        w = args[k]
        if w == "-F" and k + 1 < len(args):
            given, k = args[k + 1], k + 2
            continue
        if w.startswith("-F") and len(w) > 2:
            given = w[2:]
        else:
            out.append(w)
        k += 1
    if given is not None:
        return out, [os.path.abspath(os.path.expanduser(given))]
    return out, [str(Path.home() / ".ssh" / "config"), SYSTEM_CONFIG]


def strict_config(files: list[str]) -> Path:
    """A `-F` file: strict host keys for every hop, then the config files ssh would have read."""
    text = "".join([
        "# made by waops: strict host keys on every hop (also ProxyJump hops), then your own config\n",
        "StrictHostKeyChecking yes\nBatchMode yes\n",
        *(f"Include {shlex.quote(f)}\n" for f in files if Path(f).exists()),
    ])
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache") / "waops"
    path = base / f"ssh_config-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not path.is_file():
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=base)
        with os.fdopen(fd, "w") as f:  # mkstemp: 0600, as ssh requires of a config file
            f.write(text)
        os.replace(tmp, path)
    return path


def control_path(host: Host) -> str:
    """Ansible's ControlPath for this host (ssh connection plugin: sha1 of host-port-user)."""
    cpdir = os.path.expanduser(os.environ.get("ANSIBLE_SSH_CONTROL_PATH_DIR") or "~/.ansible/cp")
    os.makedirs(cpdir, mode=0o700, exist_ok=True)
    port = host.port if host.port_given else None
    digest = hashlib.sha1(f"{host.address}-{port}-{host.user}".encode()).hexdigest()[:10]
    return os.path.join(cpdir, digest)


def _has_option(args: list[str], name: str) -> bool:
    name = name.lower()
    for k, w in enumerate(args):
        opt = args[k + 1] if w == "-o" and k + 1 < len(args) else w[2:] if w.startswith("-o") else ""
        if opt.replace("=", " ", 1).split(" ", 1)[0].lower() == name:
            return True
    return False


def argv(host: Host, connect_timeout: float, command: str, verbose: bool = False) -> list[str]:
    """The ssh command line for `command` on `host`, in Ansible's order, strict options first."""
    user_args, configs = _user_config(list(host.ssh_args))
    cmd = [SSH, "-F", str(strict_config(configs)), *STRICT]
    if verbose:  # the refusal retry: no master (its stderr would stay open), every hop verbose
        cmd += ["-v", "-o", "ControlMaster=no", "-o", "ControlPath=none"]
    cmd += split_args(os.environ.get("ANSIBLE_SSH_ARGS", DEFAULT_SSH_ARGS))
    if host.port_given:
        cmd += ["-o", f"Port={host.port}"]
    if host.key_file:
        cmd += ["-o", f"IdentityFile={host.key_file}"]
    cmd += [*NO_PASSWORDS]
    if host.user:
        cmd += ["-o", f"User={host.user}"]
    cmd += ["-o", f"ConnectTimeout={max(1, int(connect_timeout))}", *user_args]
    if host.waops_known_hosts and not _has_option(user_args, "UserKnownHostsFile"):
        files = [*host.waops_known_hosts, "~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
        cmd += ["-o", "UserKnownHostsFile=" + " ".join(dict.fromkeys(files))]
    if not _has_option(user_args, "ControlPath") and _has_option(cmd, "ControlPersist"):
        cmd += ["-o", f"ControlPath={control_path(host)}"]
    return [*cmd, "--", host.address, command]


def divergences(host: Host) -> list[str]:
    """Settings of this host the probe does not follow the way Ansible does (said before probing)."""
    why: list[str] = []
    conn = (host.connection or "ssh").split(".")[-1]
    if conn not in ("ssh", "smart"):
        why.append(f"ansible_connection is {host.connection}; the probe uses ssh")
    if host.ssh_executable and host.ssh_executable != SSH:
        why.append(f"ansible_ssh_executable {host.ssh_executable} is not used; the probe runs {SSH}")
    if not host.strict_host_keys or os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "").lower() in (
            "0", "false", "no", "off"):
        why.append("Ansible may accept an unknown host key here (StrictHostKeyChecking/host_key_checking);"
                   " the probe refuses it")
    if host.password and host.ssh_args:
        why.append("a password host is probed with paramiko, which ignores ansible_ssh_common_args/"
                   "extra_args (ProxyJump, ProxyCommand, -o options)")
    return why


# ------------------------------------------------------------------------------------------ run
_live: set[int] = set()  # process groups of running ssh clients, killed if the controller exits first
_live_lock = threading.Lock()


def _kill_live() -> None:
    with _live_lock:
        for pgid in list(_live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


atexit.register(_kill_live)


class OpenSSHTransport:
    def __init__(self, host: Host, deadline: float) -> None:
        """`deadline` is an absolute time.monotonic() value shared by connect and every command."""
        self.name = host.name
        self.host = host
        self.deadline = deadline

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise UnreachableError(f"{self.name}: deadline passed")
        return left

    def _spawn(self, cmd: list[str], stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        # stderr goes to a file: a ProxyCommand or jump ssh started by a connection master lives on
        # with our stderr, and a pipe would then never reach EOF.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True)  # no terminal: no hop can prompt
            with _live_lock:
                _live.add(proc.pid)
            try:
                out, _ = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise UnreachableError(f"{self.name}: command did not finish within the deadline "
                                       f"({timeout:.0f}s)") from None
            finally:
                with _live_lock:
                    _live.discard(proc.pid)
            err.seek(0)
            return proc.returncode, out[:MAX_OUTPUT], err.read(MAX_OUTPUT)

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> Result:
        start = time.monotonic()
        left = min(self._left(), timeout)
        try:
            cmd = argv(self.host, min(left, 15.0), command)
        except OSError as exc:  # the generated config or the ControlPath directory cannot be written
            raise UnreachableError(f"{self.name}: cannot prepare ssh: {exc}") from None
        try:
            status, out, err = self._spawn(cmd, stdin, left)
        except FileNotFoundError:
            raise UnreachableError(f"{self.name}: the ssh client ({SSH}) is not installed") from None
        if status == 255:
            self._raise(err)
        return Result(status, out, err, time.monotonic() - start)

    def _raise(self, err: bytes) -> None:
        text = err.decode("utf-8", "replace")
        if not _refused(text):
            # A hop behind a connection master has its stderr sent to /dev/null by ssh, so its reason
            # (a refused bastion key) is lost: ask once more, verbosely and without a master.
            again = self._verbose()
            if _refused(again) or _reason(text) in ("", *_VAGUE):
                text = again or text
        if _refused(text):
            raise self._refusal(text)
        why = _reason(text)
        m = re.match(r"ssh: connect to host (\S+) port (\d+): (.*)", why)
        if m:  # the paramiko transport's wording, which people and tests already know
            raise UnreachableError(f"{self.name}: cannot connect to {m[1]}:{m[2]}: {m[3]}")
        raise UnreachableError(f"{self.name}: ssh: {why.removeprefix('ssh: ') or 'failed (exit 255)'}")

    def _verbose(self) -> str:
        with contextlib.suppress(UnreachableError, OSError):
            cmd = argv(self.host, min(self._left(), 10.0), "true", verbose=True)
            return self._spawn(cmd, b"", min(self._left(), 15.0))[2].decode("utf-8", "replace")
        return ""

    def _refusal(self, text: str) -> HostKeyRefused:
        who, port = _refused_host(text) or (self.host.address, None)
        changed = "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        fp = _sent_fingerprint(text) or _last_server_key(text)
        if fp is None and "Server host key:" not in text:
            fp = _last_server_key(self._verbose())
        if fp is None:  # a hop behind a ProxyCommand of the user's own is not verbose: ask it directly
            fp = _keyscan(who, port, min(5.0, max(1.0, self.deadline - time.monotonic())))
        # the same address on another port is a hop only when the inventory fixed the target's port
        same = who in (self.host.address, self.host.name) and (
            not self.host.port_given or (port or "22") == str(self.host.port))
        hop = "" if same else f" of jump host {who}" + (f" port {port}" if port else "")
        reason = (f"key{hop} does not match known_hosts (changed or spoofed)" if changed
                  else f"unknown key{hop}, not in known_hosts")
        return HostKeyRefused(self.name, reason, fp)

    def close(self) -> None:
        pass  # the connection master, if any, outlives us by design (ControlPersist)


_REFUSED = re.compile(r"No \S+ host key is known for (\S+?) and|Host key for (\S+?) has changed|"
                      r"host key for (\S+?) has changed")
_FP = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


_VAGUE = ("Connection closed by UNKNOWN port 65535",
          "kex_exchange_identification: Connection closed by remote host")


def _refused(text: str) -> bool:
    return "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text


def _reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith(("debug", "Warning:", "OpenSSH_", "Authenticated to", "Transferred:"))]
    telling = [ln for ln in lines if ln not in _VAGUE]  # a hop's own reason beats the outer ssh's echo of it
    return (telling or lines)[-1] if lines else ""


def _refused_host(text: str) -> tuple[str, str | None] | None:
    """(host, port or None) that ssh names in a refusal: `10.0.0.5` or `[10.0.0.5]:2222`."""
    for m in _REFUSED.finditer(text):
        name = next(g for g in m.groups() if g)
        host, sep, port = name.partition("]:")
        return (host.lstrip("["), port if sep else None)
    return None


def _sent_fingerprint(text: str) -> str | None:
    m = re.search(r"sent by the remote host is\s*\n\s*(SHA256:\S+)", text)
    return m.group(1).rstrip(".") if m else None


def _last_server_key(text: str) -> str | None:
    found = [m.group(0) for line in text.splitlines() if "Server host key:" in line
             for m in [_FP.search(line)] if m]
    return found[-1] if found else None


def _keyscan(host: str, port: str | None, timeout: float) -> str | None:
    try:
        scan = subprocess.run(["ssh-keyscan", "-T", str(max(1, int(timeout))), "-t", "ed25519,ecdsa,rsa",
                               *(["-p", port] if port else []), host],
                              capture_output=True, timeout=timeout + 1, check=False)
        fps = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, timeout=5,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _FP.search(fps.stdout.decode())
    return m.group(0) if m else None
