"""`waops recover` against real lab hosts: the decision table's fault matrix, end to end.

One lab per module (lean: 2 hosts, provisioned once): host 1 runs `shop` under pm2 with the files store;
host 2 runs `shop` and `crm` under systemd with the PostgreSQL store, sharing one table, so a repair of
`shop` must leave `crm`'s rows and process alone. Each case injects a real fault (`waops lab fault`'s injector, or the
simulator with parameters), checks that `waops diagnose --output json` (the CLI, as a person runs it)
names exactly that cause with its evidence, runs the real CLI (`waops recover --yes --output json`),
then checks the outcome, the verified backup taken before any destructive step, the untouched neighbour
and the incident row.

Set WAOPS_TEST_LAB=<name> to reuse a lab that is up and provisioned (development); it is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

LAB_NAME = "matrix"
PG_HOST_INDEX = 2  # the systemd + postgres host


@dataclass
class RcLab:
    lab: Any
    inventory: Path
    store: Path

    def host(self, index: int) -> Any:
        return self.lab.hosts()[index - 1]

    def ssh(self, index: int, cmd: str, check: bool = True, timeout: float = 120) -> str:
        return self.lab.ssh(self.host(index), cmd, check=check, timeout=timeout)

    def phone(self, index: int, bot: str = "shop") -> str:
        return next(b["phone"] for b in self.host(index).bots if b["name"] == bot)

    @property
    def sim(self) -> Any:
        from waops_lab.sandbox.client import SimulatorClient

        return SimulatorClient(self.lab.control_url)


def _write_bots(lab: Any) -> None:
    """Host 2 gets a second bot and the PostgreSQL store (host_vars beat the lab's inventory vars)."""
    h2 = lab.hosts()[PG_HOST_INDEX - 1]
    shop = dict(h2.bots[0], service_manager="systemd", auth_store="postgres")
    crm = {"name": "crm", "phone": shop["phone"][:-2] + "77", "service_manager": "systemd", "auth_store": "postgres"}
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{h2.name}.yml").write_text(json.dumps({"waops_bots": [shop, crm]}))
    # LabHost.bots drive `waops lab fault`: keep them in step with the inventory.
    state = json.loads(lab.state_file.read_text())
    state["hosts"][PG_HOST_INDEX - 1]["bots"] = [shop, crm]
    lab.state_file.write_text(json.dumps(state, indent=2))


def _provision(inventory: Path) -> None:
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), "playbooks/site.yml"], cwd=_repo(),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _waops() -> str:
    return shutil.which("waops") or str(Path(sys.executable).with_name("waops"))


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rclab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("rc") / "incidents.db"
    try:
        if not reuse:
            lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
            _write_bots(lab)
            _provision(lab.inventory_dir)
        r = RcLab(lab, lab.inventory_dir, store)
        for i in (1, 2):
            # A fresh `open` in every log: failures of an earlier run are history for the diagnosis.
            subprocess.run(["ansible-playbook", "-i", str(r.inventory), "playbooks/restart.yml", "-e",
                            "waops_bot=shop", "--limit", r.host(i).name], cwd=_repo(), capture_output=True,
                           timeout=300, check=True)
            wait_healthy(r, i)
        yield r
    finally:
        if not reuse:
            lab.down(log=lambda _m: None)


# --- helpers (the bench uses them too) ------------------------------------------------------------


def facts(r: RcLab, index: int, bot: str = "shop") -> dict[str, Any]:
    doc = json.loads(r.ssh(index, f"waops-host facts --json --bot {bot}"))
    return doc["bots"][0]


def diagnose(r: RcLab, index: int, bot: str = "shop") -> Any:
    from waops.diagnose import diagnose as run

    return run(facts(r, index, bot))


def wait_cause(r: RcLab, index: int, cause: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = diagnose(r, index)
        if last.cause == cause:
            return
        time.sleep(1)
    raise AssertionError(f"host {index}: diagnosis stayed {last and last.cause}, expected {cause}: "
                         f"{last and last.evidence}")


def diagnose_cli(r: RcLab, index: int, bot: str = "shop") -> tuple[int, dict[str, Any]]:
    """`waops diagnose HOST --bot BOT --output json`, run as a person would."""
    proc = subprocess.run([_waops(), "diagnose", "-i", str(r.inventory), r.host(index).name, "--bot", bot,
                           "--output", "json"], capture_output=True, text=True, timeout=120, cwd=_repo(),
                          env=dict(os.environ, NO_COLOR="1"))
    try:
        results = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError):
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-2000:]}") from None
    return proc.returncode, next(x for x in results if x["bot"] == bot)


def wait_healthy(r: RcLab, index: int, bot: str = "shop", timeout: float = 150) -> None:
    from waops.verify import command_round_trip

    # the round-trip hook the lab's inventory names (the simulator's test message), as recover runs it
    hook = json.loads((r.lab.inventory_dir / "hosts.yml").read_text())["all"]["vars"]["waops_verify_roundtrip_command"]
    host = r.host(index).name
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        d = diagnose(r, index, bot)
        if d.cause == "healthy":
            rt = command_round_trip(hook, host=host, bot=bot, phone=r.phone(index, bot))
            assert rt is not None
            ok, why = rt(8)
            if ok:
                return
        else:
            why = f"{d.cause}: {d.evidence[:2]}"
        time.sleep(2)
    raise AssertionError(f"host {index}/{bot} not healthy: {why}")


def backups(r: RcLab, index: int, bot: str = "shop") -> list[dict[str, Any]]:
    out = json.loads(r.ssh(index, f"waops-host list --bot {bot} --json"))
    return out["results"][0]["backups"]


def take_backup(r: RcLab, index: int, bot: str = "shop") -> None:
    r.ssh(index, f"waops-host backup --bot {bot} --reason manual --json >/dev/null")


def _psql(r: RcLab) -> str:
    sql = ("SELECT count(*) || ':' || md5(coalesce(string_agg(key || value::text, ',' ORDER BY key), '')) "
           "FROM baileys_auth WHERE session = 'crm'")
    cfg = json.loads(r.ssh(PG_HOST_INDEX, "cat /etc/waops/bots/crm.json"))["postgres"]
    return r.ssh(PG_HOST_INDEX, f"PGPASSFILE={cfg['password_file']} psql -At -h {cfg['host']} -p {cfg['port']} "
                                f"-U {cfg['user']} -d {cfg['dbname']} -c \"{sql}\"").strip()


def main_pid(r: RcLab, index: int, bot: str = "shop") -> int | None:
    return facts(r, index, bot)["process"].get("pid")


def recover_cli(r: RcLab, index: int, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    env = dict(os.environ, WAOPS_STORE=str(r.store), NO_COLOR="1")
    proc = subprocess.run(
        [_waops(), "recover", "-i", str(r.inventory), r.host(index).name, "--bot", "shop",
         "--yes", "--output", "json", "--verify-timeout", "150", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=_repo())
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-3000:]}") from None
    return proc.returncode, doc["results"][0]


def incident(r: RcLab, incident_id: int) -> Any:
    from waops.incidents import connect

    with connect(r.store) as s:
        return s.get(incident_id)


@contextlib.contextmanager
def auto_link_off(r: RcLab) -> Iterator[None]:
    r.sim.set_auto_link(False)
    try:
        yield
    finally:
        r.sim.set_auto_link(True)


def inject(r: RcLab, index: int, cause: str, **params: Any) -> None:
    """`waops lab fault HOST CAUSE` (its injector), or the simulator with parameters (burst, count)."""
    from waops_lab.lab.faults import inject as lab_inject

    if params:
        r.sim.fault(r.phone(index), cause, **params)
    else:
        lab_inject(r.lab, r.host(index).name, cause, "shop")


def clear(r: RcLab, index: int) -> None:
    from waops_lab.lab.faults import inject as lab_inject

    lab_inject(r.lab, r.host(index).name, "clear", "shop")


# --- the fault matrix -----------------------------------------------------------------------------

# (host, cause, accepted outcomes, backup reasons that prove a verified backup before a destructive
# step (None: no destructive step), injection params). `waops diagnose` must name exactly `cause`.
MATRIX: list[tuple[int, str, tuple[str, ...], tuple[str, ...] | None, dict[str, Any]]] = [
    (1, "process_down", ("resolved",), None, {}),
    (2, "process_down", ("resolved",), None, {}),
    (1, "creds_lost", ("resolved",), ("pre-restore",), {}),
    (2, "creds_lost", ("resolved",), ("pre-restore",), {}),
    (1, "corrupt_keys", ("resolved", "rolled_back"), ("pre-prune",), {"burst": 12}),
    (2, "logged_out", ("resolved",), ("pre-reset",), {}),
    (1, "conflict", ("resolved",), None, {}),
    (1, "crash", ("resolved",), None, {}),
    (2, "library_mismatch", ("resolved",), None, {}),
    (1, "client_outdated", ("resolved",), None, {}),
    (1, "file_bloat", ("resolved", "rolled_back"), ("pre-prune",), {"count": 1500}),
    (1, "network", ("resolved",), None, {}),
    (2, "banned", ("needs_human",), None, {}),
    (1, "rate_limited", ("needs_human",), None, {}),
]


@pytest.mark.parametrize(("index", "cause", "allowed", "backup_reasons", "params"), MATRIX,
                         ids=[f"{c}-host{i}" for i, c, *_ in MATRIX])
def test_fault_matrix(rclab: RcLab, index: int, cause: str, allowed: tuple[str, ...],
                      backup_reasons: tuple[str, ...] | None, params: dict[str, Any]) -> None:
    r = rclab
    expected = allowed[0]
    take_backup(r, index)  # the 6-hourly cron backup, made now so the case does not depend on the clock
    crm_before = _psql(r)
    other = 2 if index == 1 else 1
    other_pid = main_pid(r, other)
    release_before = facts(r, index)["library"]["release"]
    injected_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    clearer = None
    try:
        with auto_link_off(r) if cause == "creds_lost" else contextlib.nullcontext():
            inject(r, index, cause, **params)
            wait_cause(r, index, cause)
            rc, diag = diagnose_cli(r, index)  # the CLI names the injected cause, with evidence
            assert (rc, diag["cause"]) == (1, cause), diag
            assert diag["evidence"] and all(isinstance(e, str) and e for e in diag["evidence"]), diag
            if cause == "network":  # a transient outage: the network comes back during the back-off
                clearer = threading.Timer(15, clear, (r, index))
                clearer.start()
            untouched_pid = main_pid(r, index) if expected == "needs_human" else None
            rc, res = recover_cli(r, index)
        assert res["outcome"] in allowed, res
        assert res["cause"] == cause, res
        assert rc == (0 if expected == "resolved" else 4), res
        inc = incident(r, res["incident_id"])
        assert inc is not None and inc.outcome == res["outcome"] and inc.cause == cause
        if expected == "resolved":
            assert inc.mttr_s is not None and inc.mttr_s > 0
            assert any(s.name == "verify" and s.result == "ok" for s in inc.steps)
        else:
            assert res["steps"] and all(s["kind"] in ("alert", "escalate") for s in res["steps"])
            assert main_pid(r, index) == untouched_pid  # nothing restarted
        if backup_reasons:
            made = [b for b in backups(r, index) if b["reason"] in backup_reasons and b["id"] >= injected_at]
            assert made and all(b["verified"] for b in made), backups(r, index)
        if cause == "client_outdated":  # pinned past the refused version, in a new release
            lib = facts(r, index)["library"]
            assert lib["release"] != release_before and "-pin-" in lib["release"], lib
        # The neighbours: crm's rows in the shared table, and the other host's bot process.
        assert _psql(r) == crm_before
        assert main_pid(r, other) == other_pid
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: never hide the failure above
            restore(r, index, cause, clearer, release_before)
        raise
    restore(r, index, cause, clearer, release_before)
    assert diagnose(r, PG_HOST_INDEX, "crm").cause == "healthy"


def restore(r: RcLab, index: int, cause: str, clearer: threading.Timer | None, release: str) -> None:
    """Back to a healthy, linked bot on the release it ran before, for the next case (a person's part
    included: lift a ban)."""
    if clearer is not None:
        clearer.join()
    clear(r, index)
    r.sim.set_auto_link(True)
    made = facts(r, index)["library"]["release"]
    if made != release:  # pinned: back to the release of the start, and the case's release goes
        switch_release(r, index, release)
        root = json.loads(r.ssh(index, "cat /etc/waops/bots/shop.json"))["release_root"]
        r.ssh(index, f"rm -rf {root}/releases/{made}", check=True)
    if cause in ("banned", "rate_limited"):
        # The person's fix in the lab: the ban or limit is lifted; a restart writes a fresh `open`.
        subprocess.run(["ansible-playbook", "-i", str(r.inventory), "playbooks/restart.yml", "-e",
                        "waops_bot=shop", "--limit", r.host(index).name], cwd=_repo(), capture_output=True,
                       timeout=300)
    wait_healthy(r, index, timeout=240)


def switch_release(r: RcLab, index: int, release: str) -> None:
    cfg = json.loads(r.ssh(index, "cat /etc/waops/bots/shop.json"))
    restart = (f"systemctl restart {cfg['service_name']}" if cfg["service_manager"] == "systemd" else
               f"runuser -u {cfg['user']} -- env PM2_HOME={cfg['pm2_home']} pm2 restart {cfg['service_name']}")
    r.ssh(index, f"cd {cfg['release_root']} && ln -sfn releases/{release} current.tmp && mv -T current.tmp current "
                 f"&& {restart} >/dev/null", check=True)


def test_healthy_bot_changes_nothing(rclab: RcLab) -> None:
    pid = main_pid(rclab, 1)
    count = len(backups(rclab, 1))
    rc, res = recover_cli(rclab, 1)
    assert (rc, res["outcome"], res["incident_id"], res["steps"]) == (0, "healthy", None, [])
    assert main_pid(rclab, 1) == pid and len(backups(rclab, 1)) == count


def test_failing_fix_is_rolled_back_and_recorded(rclab: RcLab) -> None:
    """process_down whose restart brings up a broken release: the restart's verify fails, the rollback
    chain switches to the previous release (library version checked), verifies, and records rolled_back."""
    r = rclab
    cfg = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))
    good = facts(r, 1)["library"]["release"]
    root = cfg["release_root"]
    # A deploy that was switched but never restarted, then the service stops: logs say nothing yet.
    r.ssh(1, f"set -e; cd {root}; new=releases/$(date +%Y%m%dT%H%M%S)-broken; cp -a releases/{good} $new; "
             "sed -i '1i throw new Error(\"broken deploy\")' $new/index.js; chown -R wa-shop: $new; "
             "ln -sfn ${new} current.tmp; mv -T current.tmp current")
    inject(r, 1, "process_down")
    wait_cause(r, 1, "process_down")
    try:
        rc, res = recover_cli(r, 1, "--verify-timeout", "40")
        assert res["outcome"] == "rolled_back", res
        assert rc == 0
        names = [(s["name"], s["stage"], s["result"]) for s in res["steps"]]
        assert names[:2] == [("restart", 0, "ok"), ("verify", 0, "failed")]
        assert ("rollback_release", 1, "ok") in names and names[-1] == ("verify", 1, "ok")
        after = facts(r, 1)["library"]
        assert after["release"] == good and after["installed"] == "6.7.18"
        inc = incident(r, res["incident_id"])
        assert inc.outcome == "rolled_back" and inc.mttr_s is not None
        assert [s.name for s in inc.steps] == ["restart", "verify", "rollback_release", "verify"]
    finally:
        r.ssh(1, f"cd {root} && ln -sfn releases/{good} current.tmp && mv -T current.tmp current", check=False)
        wait_healthy(r, 1, timeout=180)


def test_pin_library_builds_a_reproducible_release(rclab: RcLab) -> None:
    """An ESM-only upgrade breaks the bot; pin_library.yml pins the vendored 6.7.18 in a new release
    (npm install --save-exact, then npm ci from the lockfile) and the bot answers again."""
    r = rclab
    inject(r, 2, "library_mismatch")
    wait_cause(r, 2, "library_mismatch")
    proc = subprocess.run(["ansible-playbook", "-i", str(r.inventory), "playbooks/pin_library.yml", "-e",
                           "waops_bot=shop", "-e", "waops_library_version=6.7.18", "--limit", r.host(2).name],
                          cwd=_repo(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lib = facts(r, 2)["library"]
    assert lib["installed"] == "6.7.18" and "-pin-6.7.18" in lib["release"]
    pkg = json.loads(r.ssh(2, "cat /opt/waops/bots/shop/current/package.json"))
    assert pkg["dependencies"]["baileys"] == "file:vendor/baileys-6.7.18"
    wait_healthy(r, 2)


def test_unreachable_host_fails_clearly(rclab: RcLab, tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"gone-1": {
        "ansible_host": "192.0.2.1", "ansible_user": "root", "waops_known_hosts_file": str(rclab.lab.known_hosts),
        "waops_bots": [{"name": "shop"}]}}}}))
    env = dict(os.environ, WAOPS_STORE=str(tmp_path / "i.db"), WAOPS_TIMEOUT="4")
    t0 = time.monotonic()
    proc = subprocess.run([_waops(), "recover", "-i", str(inv), "gone-1", "--yes",
                           "--output", "json"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    res = json.loads(proc.stdout)["results"][0]
    assert res["outcome"] == "unreachable" and res["incident_id"] is None
    assert time.monotonic() - t0 < 60
