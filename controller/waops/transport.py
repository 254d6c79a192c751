"""Run one command on a host, with stdin, under a hard deadline: OpenSSH (waops.openssh, the default),
paramiko SSH (password hosts, WAOPS_SSH=paramiko) or a local subprocess.

paramiko SSH is strict: host keys are checked against ~/.ssh/known_hosts plus the inventory's known_hosts
files (RejectPolicy, nothing is ever added), ~/.ssh/config is honoured, and a refused key becomes an
UnreachableError carrying the key's SHA256 fingerprint and the reason. stdout and stderr are read
together so a big output never deadlocks. paramiko is imported only when an SSH transport is made.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from waops.errors import UnreachableError

if TYPE_CHECKING:
    from waops.inventory import Host

MAX_OUTPUT = 32 * 1024 * 1024  # bytes kept per stream; a runaway command cannot eat the controller
CHUNK = 32_768


@dataclass
class Result:
    exit_status: int
    stdout: bytes
    stderr: bytes
    elapsed_s: float


class Transport(Protocol):
    name: str

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> Result: ...

    def close(self) -> None: ...


class HostKeyRefused(UnreachableError):
    def __init__(self, host: str, reason: str, fingerprint: str | None) -> None:
        self.fingerprint = fingerprint
        self.reason = reason
        super().__init__(f"{host}: host key refused ({reason})" + (f", offered {fingerprint}" if fingerprint else ""))


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# ------------------------------------------------------------------------------------------ local
class LocalTransport:
    """The same contract on this machine (tests, and `waops diagnose --local`)."""

    def __init__(self, name: str = "localhost", env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = env

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> Result:
        start = time.monotonic()
        try:
            # communicate() reads both pipes together: no deadlock on big output
            p = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, timeout=timeout,
                               env=self.env, check=False)
        except subprocess.TimeoutExpired:
            raise UnreachableError(f"{self.name}: command did not finish within {timeout:.0f}s") from None
        return Result(p.returncode, p.stdout[:MAX_OUTPUT], p.stderr[:MAX_OUTPUT], time.monotonic() - start)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ ssh
@dataclass
class SSHTarget:
    """Where and how to connect, after ~/.ssh/config is applied (inventory values win)."""

    name: str
    hostname: str
    port: int
    user: str
    key_files: list[str]
    known_hosts: list[str]
    password: str | None = None


def _paramiko(ssh_config: Path) -> Any:
    """paramiko, without `invoke` (and the unittest.mock it pulls in, ~50 ms of a diagnose) unless the
    ssh config needs it: paramiko uses it only for `Match exec`."""
    import sys

    if "paramiko" not in sys.modules and "invoke" not in sys.modules:
        try:
            needs_invoke = "exec" in ssh_config.read_text(errors="replace")
        except OSError:
            needs_invoke = False
        if not needs_invoke:
            sys.modules["invoke"] = None  # type: ignore[assignment]  # import invoke -> ImportError
            try:
                import paramiko
            finally:
                del sys.modules["invoke"]
            return paramiko
    import paramiko

    return paramiko


def ssh_target(host: Host, ssh_config: str | os.PathLike[str] | None = None) -> SSHTarget:
    path = Path(ssh_config) if ssh_config else Path.home() / ".ssh" / "config"
    paramiko = _paramiko(path)
    cfg: dict[str, Any] = {}
    if path.is_file():
        try:
            cfg = dict(paramiko.SSHConfig.from_path(str(path)).lookup(host.address))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise UnreachableError(f"{host.name}: cannot read {path}: {exc}") from None
    keys = [host.key_file] if host.key_file else [os.path.expanduser(k) for k in cfg.get("identityfile", [])]
    known = [*host.known_hosts, *(os.path.expanduser(k) for k in str(cfg.get("userknownhostsfile", "")).split())]
    port = host.port if host.port != 22 or "port" not in cfg else int(cfg["port"])
    return SSHTarget(
        name=host.name,
        hostname=str(cfg.get("hostname") or host.address) if host.address == host.name else host.address,
        port=port,
        user=host.user or str(cfg.get("user") or os.environ.get("USER") or "root"),
        key_files=[k for k in keys if k],
        known_hosts=[k for k in dict.fromkeys(known) if k and k != "/dev/null"],
        password=host.password,
    )


class SSHTransport:
    def __init__(self, target: SSHTarget, deadline: float) -> None:
        """`deadline` is an absolute time.monotonic() value shared by connect and every command."""
        self.name = target.name
        self.target = target
        self.deadline = deadline
        self._client: Any = None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise UnreachableError(f"{self.name}: deadline passed")
        return left

    def connect(self) -> None:
        import paramiko

        t = self.target
        offered: dict[str, str] = {}

        class Refuse(paramiko.RejectPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                offered["fp"] = fingerprint(key)
                offered["type"] = key.get_name()
                raise paramiko.SSHException(f"{hostname} is not in known_hosts")

        client = paramiko.SSHClient()
        with contextlib.suppress(OSError, paramiko.SSHException):
            client.load_system_host_keys()  # ~/.ssh/known_hosts; never saved back
        for kh in t.known_hosts:
            if Path(kh).is_file():
                try:
                    client.get_host_keys().load(kh)
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    raise UnreachableError(f"{t.name}: cannot read known_hosts {kh}: {exc}") from None
        client.set_missing_host_key_policy(Refuse())
        left = self._left()
        try:
            client.connect(
                t.hostname, port=t.port, username=t.user, key_filename=t.key_files or None, password=t.password,
                timeout=min(left, 15.0), banner_timeout=left, auth_timeout=left, channel_timeout=left,
                allow_agent=True, look_for_keys=not t.key_files,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(t.name, "key does not match known_hosts (changed or spoofed)",
                                 fingerprint(exc.key)) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise UnreachableError(f"{t.name}: authentication failed as {t.user}: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "fp" in offered:
                raise HostKeyRefused(t.name, f"unknown {offered['type']} key, not in known_hosts",
                                     offered["fp"]) from None
            raise UnreachableError(f"{t.name}: ssh: {exc}") from None
        except TimeoutError:
            client.close()
            raise UnreachableError(f"{t.name}: connection to {t.hostname}:{t.port} timed out") from None
        except OSError as exc:
            client.close()
            raise UnreachableError(f"{t.name}: cannot connect to {t.hostname}:{t.port}: "
                                   f"{exc.strerror or exc}") from None
        self._client = client

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> Result:
        if self._client is None:
            self.connect()
        start = time.monotonic()
        end = min(self.deadline, start + timeout)
        try:
            chan = self._client.get_transport().open_session(timeout=max(0.1, end - time.monotonic()))
            chan.settimeout(0.0)
            chan.exec_command(command)
        except Exception as exc:  # paramiko raises several unrelated types here
            raise UnreachableError(f"{self.name}: cannot start the command: {exc}") from None
        out, err = bytearray(), bytearray()
        pending = memoryview(stdin)
        sent_eof = False
        try:
            while True:
                busy = False
                # stdin in small slices between reads: the remote may write before it reads all
                if pending and chan.send_ready():
                    try:
                        n = chan.send(pending[:CHUNK])
                        pending = pending[n:]
                        busy = True
                    except OSError:
                        pending = memoryview(b"")  # the command closed its stdin: fine
                if not pending and not sent_eof:
                    chan.shutdown_write()
                    sent_eof = True
                while chan.recv_ready():
                    busy = True
                    data = chan.recv(CHUNK)
                    if len(out) < MAX_OUTPUT:
                        out += data
                while chan.recv_stderr_ready():
                    busy = True
                    data = chan.recv_stderr(CHUNK)
                    if len(err) < MAX_OUTPUT:
                        err += data
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > end:
                    raise UnreachableError(f"{self.name}: command did not finish within the deadline "
                                           f"({end - start:.0f}s)")
                if not busy:
                    if pending:
                        time.sleep(0.002)  # waiting for window space: paramiko has no write event
                    else:
                        # the channel's event pipe wakes us on stdout, stderr or EOF; the timeout covers
                        # an exit status arriving alone. No 5 ms polling: 16 threads of it cost real CPU.
                        select.select([chan], [], [], min(0.05, max(0.0, end - time.monotonic())))
            status = chan.recv_exit_status()
        finally:
            chan.close()
        return Result(status, bytes(out), bytes(err), time.monotonic() - start)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def for_host(host: Host, timeout: float) -> Transport:
    """A transport for an inventory host with a hard deadline of `timeout` seconds from now.

    OpenSSH, with the command line Ansible would use (waops.openssh), unless the host logs in with a
    password (Ansible needs sshpass for that; paramiko takes it directly) or WAOPS_SSH=paramiko."""
    deadline = time.monotonic() + timeout
    if host.password or os.environ.get("WAOPS_SSH") == "paramiko":
        return SSHTransport(ssh_target(host), deadline)
    from waops.openssh import OpenSSHTransport

    return OpenSSHTransport(host, deadline)
