"""transport: a real SSH server (paramiko, in this process, on 127.0.0.1) and the local transport.

Nothing is mocked: the client speaks SSH to a server that runs the commands with /bin/sh."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from waops.cli import cli
from waops.diagnose import diagnose_document
from waops.errors import UnreachableError
from waops.facts import FactsError, collect
from waops.inventory import Host
from waops.transport import HostKeyRefused, LocalTransport, SSHTransport, fingerprint, ssh_target


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey, env: dict[str, str]) -> None:
        self.client_key, self.env = client_key, env

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "tester" and key.asbytes() == self.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_exec, args=(channel, command.decode(), self.env), daemon=True).start()
        return True


def _exec(chan: paramiko.Channel, command: str, env: dict[str, str]) -> None:
    p = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, **env})

    def feed() -> None:
        try:
            while data := chan.recv(32768):
                p.stdin.write(data)  # type: ignore[union-attr]
        except (OSError, EOFError):
            pass
        finally:
            with contextlib.suppress(OSError):
                p.stdin.close()  # type: ignore[union-attr]

    def pump(src, send) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := src.read1(32768):
                send(data)
        except OSError:
            pass

    ts = [threading.Thread(target=feed, daemon=True),
          threading.Thread(target=pump, args=(p.stdout, chan.sendall), daemon=True),
          threading.Thread(target=pump, args=(p.stderr, chan.sendall_stderr), daemon=True)]
    for t in ts:
        t.start()
    rc = p.wait()
    for t in ts[1:]:
        t.join(10)
    try:
        chan.send_exit_status(rc)
        chan.close()
    except OSError:
        pass


class SSHD:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.key_file = tmp / "id_ecdsa"
        self.client_key.write_private_key_file(str(self.key_file))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.env = env or {}
        self.known_hosts = tmp / "known_hosts"
        self.trust(self.host_key)
        self._stop = False
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def trust(self, key: paramiko.PKey) -> None:
        hk = paramiko.HostKeys()
        hk.add(f"[127.0.0.1]:{self.port}", key.get_name(), key)
        hk.save(str(self.known_hosts))

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self._transports.append(t)
            try:
                t.start_server(server=_Server(self.client_key, self.env))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def host(self, **kw: object) -> Host:
        args: dict = {"name": "srv", "address": "127.0.0.1", "port": self.port, "user": "tester",
                      "key_file": str(self.key_file), "known_hosts": [str(self.known_hosts)]}
        args.update(kw)
        return Host(**args)

    def close(self) -> None:
        self._stop = True
        # Wake the blocked accept() before closing: otherwise the thread may call accept() on the fd number
        # after close() freed it, i.e. on the next test's listening socket, and answer with this old host key.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for t in self._transports:
            t.close()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SSHD]:
    s = SSHD(tmp_path)
    yield s
    s.close()


def connect(sshd: SSHD, tmp_path: Path, timeout: float = 20.0, **kw: object) -> SSHTransport:
    return SSHTransport(ssh_target(sshd.host(**kw), ssh_config=tmp_path / "no_config"), time.monotonic() + timeout)


def test_runs_a_command_with_both_streams_and_exit_status(sshd: SSHD, tmp_path: Path) -> None:
    t = connect(sshd, tmp_path)
    try:
        r = t.run("echo out; echo err >&2; exit 3")
    finally:
        t.close()
    assert (r.exit_status, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_stdin_is_streamed_and_big_output_does_not_deadlock(sshd: SSHD, tmp_path: Path) -> None:
    t = connect(sshd, tmp_path)
    try:
        r = t.run("wc -c", stdin=b"x" * 1_000_000)
        assert r.stdout.strip() == b"1000000"
        r = t.run("head -c 4000000 /dev/zero; head -c 4000000 /dev/zero >&2; head -c 4000000 /dev/zero")
        assert (len(r.stdout), len(r.stderr)) == (8_000_000, 4_000_000)
    finally:
        t.close()


def test_hard_deadline(sshd: SSHD, tmp_path: Path) -> None:
    t = connect(sshd, tmp_path, timeout=1.5)
    start = time.monotonic()
    with pytest.raises(UnreachableError, match="deadline"):
        t.run("sleep 20", timeout=30)
    t.close()
    assert time.monotonic() - start < 5


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd: SSHD, tmp_path: Path) -> None:
    sshd.known_hosts.write_text("")
    t = connect(sshd, tmp_path)
    with pytest.raises(HostKeyRefused) as err:
        t.run("true")
    assert err.value.fingerprint == fingerprint(sshd.host_key)
    assert err.value.fingerprint.startswith("SHA256:")
    assert "not in known_hosts" in str(err.value)
    assert sshd.known_hosts.read_text() == ""  # nothing was added


def test_changed_host_key_is_refused(sshd: SSHD, tmp_path: Path) -> None:
    sshd.trust(paramiko.ECDSAKey.generate())
    with pytest.raises(HostKeyRefused, match="does not match") as err:
        connect(sshd, tmp_path).run("true")
    assert err.value.fingerprint == fingerprint(sshd.host_key)


def test_ssh_config_is_honoured(sshd: SSHD, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host labbox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User tester\n"
                   f"  IdentityFile {sshd.key_file}\n  UserKnownHostsFile {sshd.known_hosts}\n")
    target = ssh_target(Host(name="labbox", address="labbox"), ssh_config=cfg)
    t = SSHTransport(target, time.monotonic() + 20)
    try:
        assert t.run("echo ok").stdout == b"ok\n"
    finally:
        t.close()


def test_refused_connection_is_unreachable(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = SSHTransport(ssh_target(Host("gone", "127.0.0.1", port=port), ssh_config=tmp_path / "x"), time.monotonic() + 5)
    with pytest.raises(UnreachableError, match="cannot connect"):
        t.run("true")


def test_facts_over_ssh_stream_the_real_agent(tmp_path: Path) -> None:
    """One round trip: no waops-host installed here, so the agent package goes zipped to `python3 -I -c`."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (tmp_path / "auth").mkdir()
    (cfg / "shop.json").write_text(
        '{"schema":1,"name":"shop","user":"root","service_manager":"systemd",'
        '"service_name":"waops-bot-shopx.service","release_root":"%s/rel","auth_store":"files",'
        '"auth_dir":"%s/auth","health_file":"%s/health.json","backup_dir":"%s/bk","backup_keep":3,'
        '"library_package":"baileys","expected_library_version":"6.7.18","known_bad_versions":[]}'
        % ((tmp_path,) * 4))
    server = SSHD(tmp_path, env={"WAOPS_CONFIG_DIR": str(cfg), "PATH": "/usr/bin:/bin"})
    try:
        t = SSHTransport(ssh_target(server.host(), ssh_config=tmp_path / "x"), time.monotonic() + 30)
        doc = collect(t, 30)
        t.close()
    finally:
        server.close()
    assert doc.schema == 1 and doc.bots[0].bot == "shop"
    assert diagnose_document(doc)["shop"].cause == "process_down"  # no such unit on this machine


def test_local_transport_and_facts_errors(tmp_path: Path) -> None:
    t = LocalTransport(env={"WAOPS_CONFIG_DIR": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert t.run("cat", stdin=b"abc").stdout == b"abc"
    with pytest.raises(FactsError, match="no facts"):
        collect(t, 10)
    with pytest.raises(UnreachableError):
        t.run("sleep 5", timeout=0.5)


def test_diagnose_row_for_a_refused_host_key_names_reason_and_fingerprint(sshd: SSHD, tmp_path: Path) -> None:
    """The whole CLI path (inventory -> probe -> row): exit 3, the reason and the offered key, no traceback."""
    sshd.known_hosts.write_text("")  # the operator never accepted this host's key
    inv = tmp_path / "hosts.yml"
    inv.write_text(f"all:\n  hosts:\n    srv:\n      ansible_host: 127.0.0.1\n      ansible_port: {sshd.port}\n"
                   f"      ansible_user: tester\n      ansible_ssh_private_key_file: {sshd.key_file}\n"
                   f"      waops_known_hosts_file: {sshd.known_hosts}\n      waops_bots: [{{name: shop}}]\n")
    r = CliRunner().invoke(cli, ["diagnose", "-i", str(inv), "--all", "--output", "json", "--timeout", "10"])
    assert r.exit_code == 3, r.output
    row = json.loads(r.stdout)["results"][0]
    assert row["reachable"] is False and row["fingerprint"] == fingerprint(sshd.host_key)
    assert "host key refused" in row["error"] and "not in known_hosts" in row["error"]
    table = CliRunner().invoke(cli, ["diagnose", "-i", str(inv), "--all", "--timeout", "10"])
    assert table.exit_code == 3 and "unreachable" in table.stderr
    flat = table.stderr.replace("\n", "").replace("│", "").replace(" ", "")
    assert fingerprint(sshd.host_key) in flat, table.stderr
    assert "Traceback" not in table.output + table.stderr
