"""`waops recover` against real lab hosts when one fault leads to another, or the operator stops it:
a conflict that left damaged keys, the same device copied to a second host, a release on a known-bad
library version, and Ctrl-C at every step of a reset.

One lab for the module: host 1 runs `shop` under pm2 (files store), the bot's home; host 2 has `shop`
provisioned under systemd (files store, same phone) but stopped and unlinked, as a host the bot is being
moved to. Faults are made the way they happen: the simulator is told that two sockets write the same
keys; a second copy is started by hand; the auth folder is copied to host 2 and its service started; a
release pinning a known-bad version is deployed; SIGINT goes to the real CLI.

Set WAOPS_TEST_LAB_SEQ=<name> to keep the lab for the next run (development): set up on first use, left
running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.test_recover import (
    RcLab,
    _repo,
    _waops,
    backups,
    clear,
    diagnose,
    facts,
    incident,
    inject,
    recover_cli,
    switch_release,
    take_backup,
    wait_cause,
    wait_healthy,
)

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "seq3b"
CONTACT = "15550109999@s.whatsapp.net"  # a customer who keeps writing to the bot


def _playbook(r: RcLab, name: str, *args: str, limit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ansible-playbook", "-i", str(r.inventory), f"playbooks/{name}", *args, "--limit", limit],
                          cwd=_repo(), capture_output=True, text=True, timeout=1800)


def _service(r: RcLab, index: int, action: str) -> None:
    cfg = json.loads(r.ssh(index, "cat /etc/waops/bots/shop.json"))
    if cfg["service_manager"] == "systemd":
        r.ssh(index, f"systemctl {action} {cfg['service_name']}")
    else:
        r.ssh(index, f"runuser -u {cfg['user']} -- env PM2_HOME={cfg['pm2_home']} pm2 {action} "
                     f"{cfg['service_name']} >/dev/null")


def setup(r: RcLab) -> None:
    """Two hosts: `shop` at home on host 1 (pm2); host 2 provisioned for it (systemd, same phone), stopped
    and never linked (the bench uses this too)."""
    lab = r.lab
    lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
    h1, h2 = lab.hosts()
    home = dict(h1.bots[0], home_host=h1.name)
    copy = {"name": "shop", "phone": home["phone"], "service_manager": "systemd", "auth_store": "files",
            "home_host": h1.name}
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{h1.name}.yml").write_text(json.dumps({"waops_bots": [home]}))
    (host_vars / f"{h2.name}.yml").write_text(json.dumps({"waops_bots": [copy]}))
    state = json.loads(lab.state_file.read_text())
    state["hosts"][0]["bots"], state["hosts"][1]["bots"] = [home], [copy]
    lab.state_file.write_text(json.dumps(state, indent=2))
    proc = _playbook(r, "site.yml", limit=h1.name)
    assert proc.returncode == 0, proc.stdout[-4000:]
    wait_healthy(r, 1)
    # Host 2 is provisioned but never links its own device: it is where the bot is being moved to.
    r.sim.set_auto_link(False)
    try:
        proc = _playbook(r, "site.yml", limit=h2.name)
        assert proc.returncode == 0, proc.stdout[-4000:]
        _service(r, 2, "stop")
        unit = json.loads(r.ssh(2, "cat /etc/waops/bots/shop.json"))["service_name"]
        r.ssh(2, f"systemctl disable {unit} >/dev/null 2>&1 || true")
    finally:
        r.sim.set_auto_link(True)


@pytest.fixture(scope="module")
def seqlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB_SEQ")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("seq") / "incidents.db"
    r = RcLab(lab, lab.inventory_dir, store)
    try:
        if not (reuse and lab.state_file.exists()):  # a reused lab is set up on first use
            setup(r)
        wait_healthy(r, 1)
        yield r
    finally:
        if not reuse:
            lab.down(log=lambda _m: None)


def copy_to_second_host(r: RcLab) -> None:
    """Someone copies the auth folder to the new host and starts the bot there."""
    src = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))
    dst = json.loads(r.ssh(2, "cat /etc/waops/bots/shop.json"))
    blob = r.ssh(1, f"tar -C {src['auth_dir']} -czf - . | base64 -w0").strip()
    r.ssh(2, f"rm -rf {dst['auth_dir']}/* && echo {blob} | base64 -d | tar -C {dst['auth_dir']} -xzf - && "
             f"chown -R {dst['user']}: {dst['auth_dir']} && systemctl start {dst['service_name']}")


def undo_copy(r: RcLab) -> None:
    dst = json.loads(r.ssh(2, "cat /etc/waops/bots/shop.json"))
    _service(r, 2, "stop")
    r.ssh(2, f"rm -rf {dst['auth_dir']}/*")


@contextlib.contextmanager
def contacts_writing(r: RcLab, every_s: float = 1.0) -> Iterator[None]:
    """Contacts keep writing to the bot, as in real life (each message is decrypted or fails)."""
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            with contextlib.suppress(Exception):
                r.sim.send_message(r.phone(1), f"order {i}", timeout=2, contact=CONTACT)
            i += 1
            stop.wait(every_s)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=10)


def test_conflict_that_damaged_the_keys_is_resolved_not_escalated(seqlab: RcLab) -> None:
    r = seqlab
    r.sim.send_message(r.phone(1), "hello", timeout=10, contact=CONTACT)  # a session
    take_backup(r, 1)  # the cron backup from before the duplicate
    time.sleep(1.1)
    try:
        r.sim.fault(r.phone(1), "shared_keys")  # two sockets on one device write the same keys
        inject(r, 1, "conflict")  # a second copy started by hand
        wait_cause(r, 1, "conflict")
        with contacts_writing(r):
            time.sleep(8)  # the two copies kick each other while messages arrive
            rc, res = recover_cli(r, 1, "--verify-timeout", "90", timeout=900)
        steps = [(s["name"], s["stage"], s["result"]) for s in res["steps"]]
        assert res["outcome"] in ("resolved", "rolled_back") and rc == 0, res
        assert not any(n == "escalate" for n, _, _ in steps), steps
        assert steps[0] == ("stop_duplicate", 0, "ok"), steps
        first_verify = res["steps"][1]
        assert first_verify["name"] == "verify" and "moved from conflict to corrupt_keys" in first_verify["detail"]
        assert first_verify["data"]["elapsed_s"] < 80  # it stopped waiting when the cause changed
        assert ("prune_keys", 1, "ok") in steps
        inc = incident(r, res["incident_id"])
        assert inc.outcome == res["outcome"] and inc.cause == "conflict" and inc.mttr_s is not None
    finally:
        clear(r, 1)
    wait_healthy(r, 1, timeout=240)


def test_duplicate_on_a_second_host_is_named_stopped_and_not_falsely_resolved(seqlab: RcLab) -> None:
    r = seqlab
    h1, h2 = r.host(1).name, r.host(2).name
    dst = json.loads(r.ssh(2, "cat /etc/waops/bots/shop.json"))
    try:
        copy_to_second_host(r)  # the old host still runs
        deadline = time.monotonic() + 120
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            proc = subprocess.run([_waops(), "diagnose", "-i", str(r.inventory), "--all", "--output", "json"],
                                  capture_output=True, text=True, timeout=120, cwd=_repo(),
                                  env=dict(os.environ, NO_COLOR="1"))
            rows = [x for x in json.loads(proc.stdout)["results"] if x["bot"] == "shop"]
            if len(rows) == 2 and all(x["cause"] == "conflict" for x in rows):
                break
            time.sleep(3)
        by_host = {x["host"]: x for x in rows}
        assert by_host[h1]["cause"] == by_host[h2]["cause"] == "conflict", rows
        assert any(f"also runs on {h2}/shop" in e for e in by_host[h1]["evidence"]), by_host[h1]["evidence"]
        assert any(f"also runs on {h1}/shop" in e for e in by_host[h2]["evidence"]), by_host[h2]["evidence"]
        fp = by_host[h1]["facts"]["auth"]["creds"]["fingerprint"]
        assert fp and len(fp) == 16 and fp == by_host[h2]["facts"]["auth"]["creds"]["fingerprint"]

        rc, res = recover_cli(r, 1, "--verify-timeout", "90", timeout=900)
        assert res["outcome"] == "resolved" and rc == 0, res
        assert res["steps"][0]["name"] == "stop_duplicate" and res["steps"][0]["result"] == "ok"
        # The copy that is not the bot's home is stopped, and stays stopped at boot.
        assert facts(r, 2)["process"]["status"] not in ("active", "activating"), facts(r, 2)["process"]
        assert r.ssh(2, f"systemctl is-enabled {dst['service_name']} || true").strip() != "enabled"
        # "resolved" means one connection stays up: no new 440 after it.
        started = facts(r, 1)["health"]["session_started_at"]
        time.sleep(12)
        after = facts(r, 1)["health"]
        assert after["connection"] == "open" and after["session_started_at"] == started, after
        assert diagnose(r, 1).cause == "healthy"
    finally:
        undo_copy(r)
    wait_healthy(r, 1, timeout=240)


def test_known_bad_version_is_diagnosed_and_rolled_back(seqlab: RcLab) -> None:
    r = seqlab
    good = facts(r, 1)["library"]["release"]
    root = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["release_root"]
    before = set(r.ssh(1, f"ls {root}/releases").split())
    try:
        inject(r, 1, "known_bad_version")  # a deploy pinning 6.7.20: it still connects today
        deadline = time.monotonic() + 120
        while facts(r, 1)["library"]["installed"] != "6.7.20" and time.monotonic() < deadline:
            time.sleep(2)
        wait_cause(r, 1, "library_mismatch")
        d = diagnose(r, 1)
        assert any("6.7.20 is known bad" in e for e in d.evidence), d.evidence
        rc, res = recover_cli(r, 1, timeout=900)
        assert res["outcome"] == "resolved" and rc == 0, res
        assert [s["name"] for s in res["steps"]] == ["rollback_release", "verify"]
        lib = facts(r, 1)["library"]
        assert lib["release"] == good and lib["installed"] == "6.7.18" and not lib["known_bad"]
        fact = json.loads(r.ssh(1, "cat /etc/ansible/facts.d/waops_bot.fact"))["bots"]["shop"]
        assert fact["current"] == good, fact

        # The other answer, by hand: pin a good version over the bad release; the local fact then names
        # the release pin_library made, not the one before.
        inject(r, 1, "known_bad_version")
        bad = facts(r, 1)["library"]["release"]
        proc = _playbook(r, "pin_library.yml", "-e", "waops_bot=shop", "-e", "waops_library_version=6.7.18",
                         limit=r.host(1).name)
        assert proc.returncode == 0, proc.stdout[-3000:]
        pinned = facts(r, 1)["library"]["release"]
        assert "-pin-6.7.18" in pinned
        fact = json.loads(r.ssh(1, "cat /etc/ansible/facts.d/waops_bot.fact"))["bots"]["shop"]
        assert fact["current"] == pinned and fact["previous"] == bad, fact
        assert fact["releases"][pinned]["library"]["version"] == "6.7.18"
    finally:
        switch_release(r, 1, good)
        made = set(r.ssh(1, f"ls {root}/releases").split()) - before
        if made:  # the releases this case deployed go, so the next run starts from the same state
            r.ssh(1, "rm -rf " + " ".join(f"{root}/releases/{m}" for m in made))
    wait_healthy(r, 1, timeout=240)


# The reset playbook's steps, in order, and whether the session had been touched once SIGINT arrived
# while that task was starting (a step that passed its gate runs to its end; no later one starts).
RESET_STEPS = [
    ("Stop the service", False),
    ("Reset the session", True),
    ("Set the pairing method", True),
    ("Start the service", True),
    ("Wait for the bot to show", True),
]


def _recover_interrupted(r: RcLab, at: str) -> tuple[int, dict[str, Any], float]:
    env = dict(os.environ, WAOPS_STORE=str(r.store), NO_COLOR="1", COLUMNS="300")
    proc = subprocess.Popen(
        [_waops(), "recover", "-i", str(r.inventory), r.host(1).name, "--bot", "shop", "--yes", "--output", "json",
         "--verify-timeout", "60", "--link-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=_repo(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as at a terminal, even from a background job
    sent = threading.Event()
    sent_at = [0.0]
    err: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            hit = line.strip().startswith(at) or (at == "verify" and line.lstrip("> ").startswith("verify"))
            if not sent.is_set() and hit:
                sent_at[0] = time.time()
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                sent.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    # stdout here, stderr in the thread only (communicate() would read stderr too and take lines from it).
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=600)
    t.join(timeout=10)
    assert sent.is_set(), f"never saw {at!r}: {''.join(err)[-3000:]}"
    return proc.returncode, json.loads(out)["results"][0], sent_at[0]


@pytest.mark.parametrize(("at", "touched"), [*RESET_STEPS, ("verify", True)],
                         ids=[s for s, _ in RESET_STEPS] + ["verify"])
def test_ctrl_c_at_every_step_of_a_reset(seqlab: RcLab, at: str, touched: bool) -> None:
    r = seqlab
    take_backup(r, 1)
    injected = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    auth = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["auth_dir"]
    try:
        with contextlib.ExitStack() as stack:
            r.sim.set_auto_link(False)  # nobody scans: the run is still going when Ctrl-C comes
            stack.callback(r.sim.set_auto_link, True)
            inject(r, 1, "logged_out")
            wait_cause(r, 1, "logged_out")
            rc, res, sent_at = _recover_interrupted(r, at)
        assert rc == 130 and res["outcome"] == "failed", res
        pre = [b for b in backups(r, 1) if b["reason"] == "pre-reset" and b["id"] >= injected]
        creds_left = r.ssh(1, f"test -s {auth}/creds.json && echo yes || echo no").strip() == "yes"
        inc = incident(r, res["incident_id"])
        details = " ".join(s.detail for s in inc.steps)
        if touched:
            # The reset had started before the signal: it ended whole, and the incident says what it did.
            assert len(pre) == 1 and pre[0]["verified"], pre
            assert "keys deleted" in details and f"pre-reset backup {pre[0]['id']} holds them" in details, details
        else:
            # No destructive step started after the signal: no pre-reset backup, the keys are all there.
            assert pre == [] and creds_left, (pre, creds_left)
            assert "no destructive step had started" in res["why"], res["why"]
        # After the cancel the bot runs again (restarted, as recover found it).
        assert any(s.name == "restart_after_cancel" and s.result == "ok" for s in inc.steps), inc.steps
        assert sent_at > 0
    finally:
        clear(r, 1)
    rc, res = recover_cli(r, 1, timeout=900)  # back to a linked bot: reset and relink (auto-link is on)
    assert res["outcome"] in ("resolved", "healthy"), res
    wait_healthy(r, 1, timeout=240)
