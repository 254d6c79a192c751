"""Bad input -> exit code -> message: one clear line on stderr, the README's exit codes, never a
traceback, never a secret. Each row is a real `waops` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from waops.cli import cli
from waops.transport import LocalTransport

SECRET = "Zq7-Sup3rS3cret-Pw"  # must never be printed


@dataclass
class Case:
    args: list[str]
    code: int
    message: str  # a regex the one error line must contain
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _inventory(tmp: Path) -> None:
    (tmp / "hosts.yml").write_text(
        f"all:\n  hosts:\n    gone: {{ansible_host: 127.0.0.1, ansible_port: {_free_port()}, "
        "waops_bots: [{name: shop}]}\n")


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "fifo")


def _junk_store(tmp: Path) -> None:
    (tmp / "junk.db").write_bytes(b"this is not sqlite\n" * 100)


def _vaulted(tmp: Path) -> None:
    pw = tmp / "vault-pass"
    pw.write_text("correct horse\n")
    enc = subprocess.run(["ansible-vault", "encrypt_string", "--vault-password-file", str(pw), SECRET,
                          "--name", "ansible_password"], capture_output=True, text=True, check=True).stdout
    (tmp / "inv" / "group_vars").mkdir(parents=True)
    (tmp / "inv" / "group_vars" / "all.yml").write_text(enc)
    (tmp / "inv" / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n")


def _stray_file(tmp: Path) -> None:
    (tmp / "inv").mkdir()
    _inventory(tmp / "inv")
    (tmp / "inv" / "notes").write_text("some notes: [ unclosed\nmore =\n")


def _malformed(tmp: Path) -> None:
    (tmp / "bad.yml").write_text("all:\n  hosts: [unclosed\n")


NO_INV = r"-i/--inventory.*WAOPS_INVENTORY.*waops\.toml"
CASES: dict[str, Case] = {
    "diagnose, no inventory anywhere": Case(["diagnose", "--all"], 2, NO_INV),
    "recover, no inventory anywhere": Case(["recover", "--all", "--dry-run"], 2, NO_INV),
    "qr, no inventory anywhere": Case(["qr", "h1"], 2, NO_INV),
    "provision, no inventory anywhere": Case(["provision"], 2, NO_INV),
    "inventory path missing": Case(["diagnose", "-i", "nope.yml", "--all"], 2, "inventory not found"),
    "malformed inventory": Case(["diagnose", "-i", "bad.yml", "--all"], 2, "malformed inventory", setup=_malformed),
    "vaulted inventory, no vault password": Case(["diagnose", "-i", "inv", "--all"], 2, "vault", setup=_vaulted),
    "vault password file missing": Case(["diagnose", "-i", "inv", "--all"], 2, "ANSIBLE_VAULT_PASSWORD_FILE not found",
                                        env={"ANSIBLE_VAULT_PASSWORD_FILE": "/nonexistent/pw"}, setup=_vaulted),
    "store: malformed DSN with a password": Case(
        ["incidents", "list"], 2, "malformed PostgreSQL DSN", env={"WAOPS_STORE": f"postgresql://u:{SECRET}@[::1/db"}),
    "store: unknown scheme": Case(["incidents", "list"], 2, "unsupported scheme 'mysql'",
                                  env={"WAOPS_STORE": f"mysql://u:{SECRET}@h/db"}),
    "store: a directory": Case(["incidents", "list"], 2, "is a directory", env={"WAOPS_STORE": "."}),
    "store: a junk file": Case(["incidents", "list"], 1, "not a waops SQLite database",
                               env={"WAOPS_STORE": "junk.db"}, setup=_junk_store),
    "store: a FIFO": Case(["mttr", "report"], 2, "not a regular file", env={"WAOPS_STORE": "fifo"}, setup=_fifo),
    "store: PostgreSQL refuses": Case(["incidents", "list"], 1, "cannot connect to the incident store",
                                      env={"WAOPS_STORE": f"postgresql://u:{SECRET}@127.0.0.1:{_free_port()}/db"}),
    "--since far too far back": Case(["incidents", "list", "--since", "99999999999d"], 2, "before year 1",
                                     env={"WAOPS_STORE": "s.db"}),
    "--since not a time": Case(["incidents", "list", "--since", "yesterday"], 2, "not a time or a duration",
                               env={"WAOPS_STORE": "s.db"}),
    "WAOPS_CONFIG is a FIFO": Case(["diagnose", "--all"], 2, "is a FIFO", env={"WAOPS_CONFIG": "fifo"},
                                   setup=_fifo),
    "WAOPS_CONFIG is a directory": Case(["diagnose", "--all"], 2, "config file", env={"WAOPS_CONFIG": "."}),
    "WAOPS_CONFIG missing": Case(["diagnose", "--all"], 2, "config file not found",
                                 env={"WAOPS_CONFIG": "nope.toml"}),
    "--log-file FIFO with no writer": Case(["diagnose", "--log-file", "fifo"], 2, "FIFO with no writer", setup=_fifo),
    "WAOPS_TIMEOUT not a number": Case(["diagnose", "--all", "-i", "hosts.yml"], 2, "timeout must be of type float",
                                       env={"WAOPS_TIMEOUT": "abc"}, setup=_inventory),
    "WAOPS_OUTPUT unknown": Case(["diagnose", "--all", "-i", "hosts.yml"], 2, "output must be table or json",
                                 env={"WAOPS_OUTPUT": "xml"}, setup=_inventory),
    "a stray file in the inventory directory": Case(
        ["diagnose", "--all", "-i", "inv", "--timeout", "5"], 3, r"inv/notes in the inventory directory is not an "
        r"inventory; ignored", setup=_stray_file),
    "unreachable host": Case(["diagnose", "--all", "-i", "hosts.yml", "--timeout", "5"], 3, "unreachable",
                             setup=_inventory),
}


def _env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WAOPS_", "ANSIBLE_VAULT")) and k != "XDG_CONFIG_HOME"}
    # a home without waops.toml, and state (incident store, locks) inside the test's directory
    env.update(HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "config"), XDG_STATE_HOME=str(tmp / "state"),
               NO_COLOR="1", COLUMNS="200")
    env.update(extra)
    return env


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_and_its_exit_code(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    if case.setup:
        case.setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    p = subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", *case.args],
                       cwd=tmp_path, env=_env(tmp_path, case.env), capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == case.code, out
    assert "Traceback" not in out and SECRET not in out, out
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith(("waops: error:", "Error:"))]
    if case.code != 3:
        assert len(errors) == 1, p.stderr
        assert __import__("re").search(case.message, errors[0]), errors[0]
    else:
        assert __import__("re").search(case.message, out), out
    # nothing was created in the working directory (no SQLite file named after a URL)
    created = sorted(p.name for p in tmp_path.iterdir())
    assert [c for c in created if c not in before and c not in ("state", "config", "home")] == [], created


def test_readme_documents_every_exit_code() -> None:
    from waops.errors import ExitCode

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {int(line.split("|")[1]): line.split("|")[2] for line in readme.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert set(rows) == {int(c) for c in ExitCode}, rows  # the README's table is the ExitCode table
    for code, words in ((0, "healthy"), (1, "problem"), (2, "usage"), (3, "unreachable"), (4, "a person"),
                        (75, "busy"), (130, "interrupted")):
        assert words in rows[code], (code, words)


# --- one bad host never blinds the fleet --------------------------------------------------------------

GOOD = {"schema": 1, "bots": [{"bot": "shop", "process": {"manager": "pm2", "status": "online", "instances": 1},
                               "health": {"schema": 1, "bot": "shop", "connection": "open", "age_s": 5},
                               "logs": {"source": "pm2", "matched": [], "tail": []},
                               "auth": {"store": "files", "file_count": 40}}]}


@pytest.mark.parametrize("bad, why", [
    ({"schema": 1, "bots": [{"bot": "shop", "logs": {"tail": 5}}]}, "bots[0].logs.tail is int"),
    ({"schema": 1, "bots": ["x"]}, "bots[0] is str"),
    ({"schema": 1, "bots": [{"bot": "shop", "process": ["online"]}]}, "bots[0].process is list"),
    ({"schema": 1, "bots": [{"bot": 7}]}, "bots[0].bot is not a bot name"),
    ({"schema": 1, "bots": [{"bot": "shop", "auth": {"store": "postgres", "db": {"creds": "yes"}}}]},
     "bots[0].auth.db.creds is str"),
    ({"schema": 1, "bots": [{"bot": "shop", "backups": {"latest": [1]}}]}, "bots[0].backups.latest is list"),
    ({"schema": 1, "bots": [{"bot": "shop", "health": {"last_disconnect": 401}}]},
     "bots[0].health.last_disconnect is int"),
    ({"schema": 1, "bots": [{"bot": "shop", "logs": {"streams": ["a line"]}}]}, "bots[0].logs.streams is list"),
])
def test_a_host_with_odd_facts_fails_alone(tmp_path: Path, bad: dict, why: str) -> None:
    """A fake waops-host on PATH answers for each host (the real probe command runs it)."""
    bins = {}
    for host, doc in (("good", GOOD), ("odd", bad)):
        d = tmp_path / host
        d.mkdir()
        (d / "waops-host").write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(doc)}\nEOF\n")
        (d / "waops-host").chmod(0o755)
        bins[host] = d
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    good: {waops_bots: [{name: shop}]}\n    odd: {waops_bots: [{name: shop}]}\n")

    def factory(host, timeout):  # type: ignore[no-untyped-def]
        return LocalTransport(host.name, env={"PATH": f"{bins[host.name]}:/usr/bin:/bin"})

    for command in (["diagnose", "-i", str(inv), "--all", "--output", "json"],):
        r = CliRunner().invoke(cli, command, obj={"transport_factory": factory})
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        rows = {x["host"]: x for x in json.loads(r.stdout)["results"]}
        assert rows["good"]["cause"] == "healthy"
        assert rows["odd"]["cause"] == "unknown" and why in rows["odd"]["error"], rows["odd"]
        assert "malformed facts" in rows["odd"]["error"]


def test_busy_bot_exits_75_with_a_json_document(tmp_path: Path) -> None:
    from waops.locking import BotLock

    _inventory(tmp_path)
    env = _env(tmp_path, {"WAOPS_STORE": str(tmp_path / "s.db")})
    with BotLock("gone", "shop", directory=tmp_path / "state" / "waops" / "locks"):
        p = subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", "recover", "-i", "hosts.yml",
                            "gone", "--dry-run", "--output", "json"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert p.returncode == 75, p.stderr
    (row,) = json.loads(p.stdout)["results"]
    assert (row["host"], row["bot"]) == ("gone", "shop") and "Traceback" not in p.stderr


def test_ctrl_c_during_a_hung_probe_returns_at_once(tmp_path: Path) -> None:
    """An SSH server that accepts and then says nothing: the probe would wait for its whole deadline."""
    import signal
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    (tmp_path / "hosts.yml").write_text(f"all:\n  hosts:\n    mute: {{ansible_host: 127.0.0.1, ansible_port: {port}, "
                                        "waops_bots: [{name: shop}]}\n")
    try:
        # Ctrl-C at a terminal: SIGINT at its default, even when this run was started as a background job
        # (a shell without job control starts those with SIGINT ignored, and a child inherits that)
        p = subprocess.Popen([sys.executable, "-c", "from waops.cli import main; main()", "diagnose", "-i",
                              "hosts.yml", "--all", "--timeout", "60"], cwd=tmp_path, env=_env(tmp_path, {}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        conn, _ = srv.accept()  # the probe is connected and waiting for a banner
        time.sleep(0.5)
        start = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        took = time.monotonic() - start
        conn.close()
    finally:
        srv.close()
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert took < 5, took


def test_an_unreachable_host_has_one_label_in_json_and_table(tmp_path: Path) -> None:
    _inventory(tmp_path)
    base = [sys.executable, "-c", "from waops.cli import main; main()", "diagnose", "-i", "hosts.yml", "--all",
            "--timeout", "5"]
    js = subprocess.run([*base, "--output", "json"], cwd=tmp_path, env=_env(tmp_path, {}), capture_output=True,
                        text=True, timeout=120)
    table = subprocess.run(base, cwd=tmp_path, env=_env(tmp_path, {}), capture_output=True, text=True, timeout=120)
    (row,) = json.loads(js.stdout)["results"]
    assert (js.returncode, table.returncode) == (3, 3)
    assert row["cause"] == "unreachable" and not row["reachable"]
    assert "unreachable" in table.stderr and "unknown" not in table.stderr
