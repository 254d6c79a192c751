"""The OpenSSH transport: the real `ssh` client against a real SSH server (paramiko's, on 127.0.0.1).

Nothing is mocked. Each test has its own HOME and ControlPath directory, so no connection master
from another test is reused."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner
from tests.unit.test_transport import SSHD, _Server

from waops.errors import UnreachableError
from waops.inventory import Host, load
from waops.openssh import OpenSSHTransport, argv, control_path
from waops.transport import HostKeyRefused, fingerprint, for_host


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("ANSIBLE_SSH_ARGS", raising=False)
    monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(tmp_path / "cp"))
    (tmp_path / "home").mkdir()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SSHD]:
    s = SSHD(tmp_path)
    yield s
    s.close()


def _host(sshd: SSHD, **kw: object) -> Host:
    args: dict = {"port_given": True, "ssh_args": ["-o", f"UserKnownHostsFile={sshd.known_hosts}",
                                                   "-o", "IdentitiesOnly=yes"], "known_hosts": []}
    args.update(kw)
    return sshd.host(**args)


def test_runs_a_command_with_stdin_and_keeps_the_connection(sshd: SSHD) -> None:
    host = _host(sshd)
    t = for_host(host, 30)
    assert isinstance(t, OpenSSHTransport)
    r = t.run("cat | wc -c; echo oops >&2; exit 7", stdin=b"x" * 200_000)
    assert (r.exit_status, r.stdout.strip(), r.stderr.strip()) == (7, b"200000", b"oops")
    # Ansible's ControlPath: the master stays for the next probe (or playbook) of this host
    assert Path(control_path(host)).is_socket()
    assert t.run("echo again").stdout == b"again\n"


def test_unknown_key_is_refused_with_its_fingerprint_and_nothing_is_added(sshd: SSHD, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # the inventory asks for no checking at all: the probe stays strict anyway, and says so beforehand
    host = _host(sshd, ssh_args=["-o", f"UserKnownHostsFile={empty}", "-o", "StrictHostKeyChecking=no"],
                 strict_host_keys=False)
    with pytest.raises(HostKeyRefused) as err:
        OpenSSHTransport(host, time.monotonic() + 20).run("true")
    assert err.value.fingerprint == fingerprint(sshd.host_key)
    assert "unknown key" in str(err.value) and fingerprint(sshd.host_key) in str(err.value)
    assert empty.read_text() == ""


def test_changed_key_is_refused_with_the_key_offered(sshd: SSHD) -> None:
    sshd.trust(paramiko.ECDSAKey.generate())
    with pytest.raises(HostKeyRefused, match="does not match") as err:
        OpenSSHTransport(_host(sshd), time.monotonic() + 20).run("true")
    assert err.value.fingerprint == fingerprint(sshd.host_key)


def test_proxycommand_from_the_inventory_is_the_route(sshd: SSHD, tmp_path: Path) -> None:
    """The host's name resolves nowhere: only the ProxyCommand of ansible_ssh_common_args reaches it."""
    relay = tmp_path / "relay.py"
    used = tmp_path / "relay-used"
    relay.write_text(
        "import socket, sys, threading, pathlib\n"
        f"pathlib.Path({str(used)!r}).write_text(sys.argv[1])\n"
        f"s = socket.create_connection(('127.0.0.1', {sshd.port}))\n"
        "def up():\n"
        "    while d := sys.stdin.buffer.read1(65536): s.sendall(d)\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "threading.Thread(target=up, daemon=True).start()\n"
        "while d := s.recv(65536): sys.stdout.buffer.write(d); sys.stdout.buffer.flush()\n")
    sshd.known_hosts.write_text(sshd.known_hosts.read_text().replace(f"[127.0.0.1]:{sshd.port}",
                                                                     f"[db.invalid]:{sshd.port}"))
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    db:\n      ansible_host: db.invalid\n"
        f"      ansible_port: {sshd.port}\n      ansible_user: tester\n"
        f"      ansible_ssh_private_key_file: {sshd.key_file}\n"
        f"      ansible_ssh_common_args: >-\n        -o UserKnownHostsFile={sshd.known_hosts}\n"
        f"        -o ProxyCommand=\"{sys.executable} {relay} %h\"\n")
    (host,) = load(inv)
    r = OpenSSHTransport(host, time.monotonic() + 20).run("echo through")
    assert r.stdout == b"through\n" and used.read_text() == "db.invalid"


def test_the_users_own_ssh_config_given_with_dash_f(sshd: SSHD, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User tester\n"
                   f"  IdentityFile {sshd.key_file}\n  UserKnownHostsFile {sshd.known_hosts}\n")
    host = Host(name="box", address="box", ssh_args=["-F", str(cfg)])
    assert OpenSSHTransport(host, time.monotonic() + 20).run("echo cfg").stdout == b"cfg\n"
    # strictness comes first, then the user's file, included from the generated one
    cmd = argv(host, 5, "true")
    assert cmd.index("StrictHostKeyChecking=yes") < cmd.index("--") and "-F" in cmd and str(cfg) not in cmd


def test_a_mute_server_misses_the_deadline_clearly(tmp_path: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    try:
        host = Host(name="mute", address="127.0.0.1", port=srv.getsockname()[1], port_given=True)
        start = time.monotonic()
        with pytest.raises(UnreachableError, match="mute"):
            OpenSSHTransport(host, time.monotonic() + 3).run("true")
        assert time.monotonic() - start < 15
    finally:
        srv.close()


def test_a_route_the_probe_cannot_follow_is_said_before_probing(tmp_path: Path) -> None:
    from waops.cli import cli

    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    ct:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n"
                   "      ansible_connection: community.docker.docker\n      waops_bots: [{name: shop}]\n")
    r = CliRunner().invoke(cli, ["diagnose", "-i", str(inv), "--all", "--timeout", "5", "--output", "json"])
    assert "warning: ct: ansible_connection is community.docker.docker" in r.stderr, r.stderr
    assert r.exit_code == 3
    r = CliRunner().invoke(cli, ["recover", "-i", str(inv), "ct", "--dry-run", "--output", "json"],
                           env={"WAOPS_STORE": str(tmp_path / "i.db"), "WAOPS_TIMEOUT": "5"})
    assert "warning: ct: ansible_connection is community.docker.docker" in r.stderr, r.stderr


def test_password_hosts_keep_paramiko(sshd: SSHD) -> None:
    from waops.transport import SSHTransport

    assert isinstance(for_host(_host(sshd, password="pw"), 5), SSHTransport)



class _JumpServer(_Server):
    def __init__(self, client_key: paramiko.PKey, env: dict[str, str], dests: dict[int, tuple]) -> None:
        super().__init__(client_key, env)
        self.dests = dests

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "direct-tcpip" else super().check_channel_request(kind, chanid)

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple, destination: tuple) -> int:
        if destination[0] != "127.0.0.1":
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.dests[chanid] = destination
        return paramiko.OPEN_SUCCEEDED


class JumpSSHD(SSHD):
    """An SSH server that also forwards `direct-tcpip` channels to 127.0.0.1 (what `ssh -W` and
    ProxyJump ask of a jump host), with a host key of its own."""

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self._transports.append(t)
            dests: dict[int, tuple] = {}
            try:
                t.start_server(server=_JumpServer(self.client_key, self.env, dests))
            except (paramiko.SSHException, EOFError, OSError):
                continue
            threading.Thread(target=_forward, args=(t, dests), daemon=True).start()


def _forward(t: paramiko.Transport, dests: dict[int, tuple]) -> None:
    def pump(a, b) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := a.recv(32768):
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.close()

    while t.is_active():
        chan = t.accept(0.5)
        if chan is None or chan.get_id() not in dests:  # session channels are served by the exec callback
            continue
        sock = socket.create_connection(dests.pop(chan.get_id()))
        threading.Thread(target=pump, args=(chan, sock), daemon=True).start()
        threading.Thread(target=pump, args=(sock, chan), daemon=True).start()


def test_proxyjump_checks_the_jump_hosts_key_strictly(sshd: SSHD, tmp_path: Path) -> None:
    """-J in ansible_ssh_common_args: the jump host's unknown key is refused (ssh does not pass `-o`
    options to the hop; the generated -F file makes it strict), named with its fingerprint; once the
    key is known, the same route works. The jump host's config comes from the inventory's own -F file."""
    jump_dir = tmp_path / "jump"
    jump_dir.mkdir()
    jump = JumpSSHD(jump_dir)
    try:
        jump.client_key = sshd.client_key  # one key logs in on both
        kh = tmp_path / "kh"
        kh.write_text(sshd.known_hosts.read_text())  # the target is known, the jump host is not
        cfg = tmp_path / "ssh_config"
        cfg.write_text(f"Host hop\n  HostName 127.0.0.1\n  Port {jump.port}\n  User tester\n"
                       f"  IdentityFile {sshd.key_file}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n")
        host = _host(sshd, ssh_args=["-F", str(cfg), "-J", "hop", "-o", f"UserKnownHostsFile={kh}",
                                     "-o", "IdentitiesOnly=yes"])
        with pytest.raises(HostKeyRefused) as err:
            OpenSSHTransport(host, time.monotonic() + 30).run("true")
        assert err.value.fingerprint == fingerprint(jump.host_key), str(err.value)
        assert "jump host 127.0.0.1" in str(err.value)
        assert kh.read_text() == sshd.known_hosts.read_text()  # nothing added
        jump.trust(jump.host_key)
        kh.write_text(sshd.known_hosts.read_text() + jump.known_hosts.read_text())
        assert OpenSSHTransport(host, time.monotonic() + 30).run("echo hop").stdout == b"hop\n"
    finally:
        jump.close()


def test_both_inventory_readers_give_the_probe_ansibles_ssh_arguments(tmp_path: Path) -> None:
    """Ansible's FAQ bastion line in INI (quotes inside quotes) and a chained -J: the plain reader and
    Ansible's own loader hand the probe the same words, and they reach ssh's command line intact."""
    inv = tmp_path / "hosts.ini"
    inv.write_text("[waops_bot_hosts]\nbot1.example.com ansible_host=192.0.2.10 ansible_user=ops "
                   "ansible_ssh_common_args='-o ProxyCommand=\"ssh -W %h:%p -q admin@bastion.example.com\"'\n\n"
                   "[waops_bot_hosts:vars]\nansible_ssh_extra_args=-J a@jump1.example.com,a@jump2.example.com\n")
    (plain,) = load(inv, reader="plain")
    (ansible,) = load(inv, reader="ansible")
    words = ["-o", "ProxyCommand=ssh -W %h:%p -q admin@bastion.example.com",
             "-J", "a@jump1.example.com,a@jump2.example.com"]
    assert plain.ssh_args == ansible.ssh_args == words
    cmd = argv(plain, 5, "true")
    assert cmd[-2:] == ["192.0.2.10", "true"] and "User=ops" in cmd
    at = cmd.index(words[1])
    assert cmd[at - 1:at + 3] == words
    assert cmd.index("StrictHostKeyChecking=yes") < at  # strictness first: nothing after can weaken it


def test_an_installed_agent_is_not_sent_the_source_and_a_missing_one_is(tmp_path: Path) -> None:
    from waops.facts import collect
    from waops.transport import LocalTransport

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent = bin_dir / "waops-host"
    agent.write_text(f"#!/bin/sh\nwc -c > {tmp_path / 'stdin-bytes'}\n"
                     "echo '{\"schema\": 1, \"bots\": [{\"bot\": \"shop\"}]}'\n")
    agent.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    doc = collect(LocalTransport("h", env=env), 20)
    assert [b.to_dict() for b in doc.bots] == [{"bot": "shop"}]
    assert (tmp_path / "stdin-bytes").read_text().strip() == "0"
    # without the agent, the package goes zipped to python3: here a package whose cli prints a facts document
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("waops_host/__init__.py", "")
        z.writestr("waops_host/cli.py", "import json, sys\n\ndef run():\n"
                   "    print(json.dumps({'schema': 1, 'bots': [], 'argv': sys.argv}))\n    return 0\n")
    doc = collect(LocalTransport("h", env={"PATH": "/usr/bin:/bin"}), 20, source=buf.getvalue())
    assert doc.bots == [] and doc.extra["argv"] == ["waops-host", "facts", "--json"]
