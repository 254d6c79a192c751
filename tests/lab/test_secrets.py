"""Secrets grep: a distinctive PostgreSQL password and alert token, set only in a vault-encrypted
inventory (ansible-vault with a password file), appear in no output of provision, diagnose, recover
and check, in no runner artifact (also after the controller is SIGKILLed mid-run), in no file under
the controller's or the host's /tmp, and never in the process list (sampled all along).

One lab host (systemd, PostgreSQL store, so the password is really used); the lab's PostgreSQL role
gets the distinctive password, and the lab's own inventory file loses its copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PASSWORD = f"pgpw-{secrets.token_hex(6)}-grepme"
TOKEN = f"4242:tok-{secrets.token_hex(6)}-grepme"
NEEDLES = (PASSWORD.encode(), TOKEN.encode())


def _waops() -> list[str]:
    return [sys.executable, "-c", "from waops.cli import main; main()"]


class PsSampler:
    """`ps` of every process, every 0.2 s, until stopped: what any local user can see."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, check=False).stdout
            self.samples += 1
            self.hits.extend(ln.decode(errors="replace") for ln in out.splitlines() if any(n in ln for n in NEEDLES))
            time.sleep(0.2)

    def __enter__(self) -> PsSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=10)


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def _grep_tree(root: Path, limit: int = 64 * 1024 * 1024) -> list[str]:
    found = []
    for dirpath, dirnames, files in os.walk(root, onerror=lambda _e: None):
        # other labs' container trees are not ours to read, and are huge
        dirnames[:] = [d for d in dirnames if not d.startswith(("waops-lab", "pytest-of"))]
        for name in files:
            p = Path(dirpath, name)
            try:
                if p.is_symlink() or not p.is_file() or p.stat().st_size > limit:
                    continue
                data = p.read_bytes()
            except OSError:
                continue
            if any(n in data for n in NEEDLES):
                found.append(str(p))
    return found


@pytest.fixture(scope="module")
def seclab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    lab = _lab(f"sec{os.getpid() % 10000}")
    work = tmp_path_factory.mktemp("sec")
    try:
        lab.up(1, ("systemd",), log=lambda _m: None)
        # the lab's PostgreSQL role takes the distinctive password (on psql's stdin, never argv)
        pg = lab.postgres
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", str(pg.data_dir), "-p", str(pg.port),
                        "-v", "ON_ERROR_STOP=1", "-q", "-d", "postgres"], check=True, capture_output=True,
                       input=f"\\set pw '{PASSWORD}'\nALTER ROLE waops PASSWORD :'pw';\n".encode())
        inv = work / "inv"
        (inv / "group_vars" / "all").mkdir(parents=True)
        doc = json.loads((lab.inventory_dir / "hosts.yml").read_text())
        del doc["all"]["vars"]["waops_pg_password"]
        for h in doc["all"]["children"]["waops_bot_hosts"]["hosts"].values():
            h["waops_bots"] = [dict(b, auth_store="postgres") for b in h["waops_bots"]]
        (inv / "hosts.yml").write_text(json.dumps(doc, indent=2))
        shutil.copy(REPO / "lab" / "waops_lab" / "inventory" / "group_vars" / "all.yml",
                    inv / "group_vars" / "all" / "main.yml")
        vault = inv / "group_vars" / "all" / "vault.yml"
        vault.write_text(f"waops_pg_password: {PASSWORD}\nwaops_host_alert_telegram_token: '{TOKEN}'\n"
                         "waops_host_alert_telegram_chat_id: '-100123'\n")
        pw = work / "vault-pass"
        pw.write_text(secrets.token_urlsafe(16) + "\n")
        pw.chmod(0o600)
        subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(pw), str(vault)], check=True,
                       capture_output=True)
        tmpdir = work / "tmp"
        tmpdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAOPS_")}
        env.update(ANSIBLE_VAULT_PASSWORD_FILE=str(pw), WAOPS_INVENTORY=str(inv), XDG_STATE_HOME="/tmp/wsec-state",
                   WAOPS_STORE=str(work / "incidents.db"), TMPDIR=str(tmpdir), NO_COLOR="1")
        shutil.rmtree("/tmp/wsec-state", ignore_errors=True)
        yield lab, inv, env, work
    finally:
        lab.down(log=lambda _m: None)
        shutil.rmtree("/tmp/wsec-state", ignore_errors=True)


def test_no_secret_in_any_output_artifact_tmp_or_process_list(seclab: tuple) -> None:
    lab, _inv, env, _work = seclab
    host = lab.hosts()[0]
    outputs: dict[str, bytes] = {}

    def run(name: str, args: list[str], timeout: float = 1800, ok: tuple[int, ...] = (0, 1)) -> None:
        p = subprocess.run(args, env=env, capture_output=True, timeout=timeout, check=False, cwd=REPO)
        outputs[name] = p.stdout + p.stderr
        assert p.returncode in ok, (name, p.returncode, (p.stdout + p.stderr)[-3000:])

    with PsSampler() as ps:
        run("provision", [*_waops(), "provision"], ok=(0,))
        # the secret really reached the host (so a leak would have something to leak)
        assert PASSWORD in lab.ssh(host, "cat /etc/waops/bots/shop.pgpass", check=True)
        run("diagnose json", [*_waops(), "diagnose", "--all", "--output", "json"], timeout=300)
        run("diagnose table", [*_waops(), "diagnose", "--all"], timeout=300)
        from waops_lab.lab.faults import inject

        inject(lab, host.name, "process_down")
        run("recover", [*_waops(), "recover", "--all", "--yes", "--output", "json"], timeout=900, ok=(0, 1, 4))
        run("check", lab.ssh_argv(host, "waops-host check --bot shop; waops-host facts --json"), timeout=300,
            ok=(0, 1, 2))
        # a controller killed mid-run: its runner artifacts stay until the next run
        runs = Path(env["XDG_STATE_HOME"]) / "waops" / "runs"
        p = subprocess.Popen([*_waops(), "provision", "--check"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(runs.glob("*/artifacts/*/job_events/*.json")):
            time.sleep(0.2)
        children = _descendants(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        for pid in children:  # runner's ansible-playbook runs in its own session: end it by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftovers = list(runs.glob("*/artifacts/*/command"))
        time.sleep(2)
    assert leftovers, "the killed run left no artifacts to look at"
    assert ps.samples > 20
    assert ps.hits == [], ps.hits
    leaks = [name for name, out in outputs.items() if any(n in out for n in NEEDLES)]
    assert leaks == [], {n: outputs[n][-2000:] for n in leaks}
    assert _grep_tree(runs) == []
    assert _grep_tree(Path(env["TMPDIR"])) == []
    assert _grep_tree(Path("/tmp")) == []
    host_tmp = lab.ssh(host, "grep -rlF -e " + " -e ".join(f"'{n.decode()}'" for n in NEEDLES)
                       + " /tmp /var/tmp /var/log 2>/dev/null; true")
    assert host_tmp.strip() == "", host_tmp
