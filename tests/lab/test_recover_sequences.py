"""`waops recover` on real lab hosts when incidents follow each other, two operators act at once, a
backup is planted, or a part fails in the middle of a repair.

Its own lab (same shape as test_recover's: host 1 pm2 + files, host 2 systemd + PostgreSQL with a
neighbour bot `crm`), so it can run beside the fault matrix. Host 1's check sends its alerts to a webhook
in this test (the chat channel's stand-in, as in test_monitoring), with no quiet hours.
WAOPS_TEST_LAB=<name> reuses a lab that is up and provisioned this way; it is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.test_monitoring import HookSink, _hook_address
from tests.lab.test_recover import (
    PG_HOST_INDEX,
    RcLab,
    _provision,
    _repo,
    _waops,
    _write_bots,
    auto_link_off,
    backups,
    clear,
    facts,
    incident,
    inject,
    recover_cli,
    take_backup,
    wait_cause,
    wait_healthy,
)

pytestmark = pytest.mark.lab

LAB_NAME = "sequences"


def _alerts_to_webhook(lab: Any) -> None:
    """Host 1's check alerts go to a webhook on the lab bridge (this test's HookSink), whatever the hour."""
    h1 = lab.hosts()[0]
    with socket.socket() as s:
        s.bind((f"{lab.settings.prefix}.1", 0))
        port = s.getsockname()[1]
    path = lab.inventory_dir / "host_vars" / f"{h1.name}.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"waops_bots": h1.bots, "waops_host_alert_quiet_hours": "",
                                "waops_host_alert_webhook_url": f"http://{lab.settings.prefix}.1:{port}/hook"}))
    path.chmod(0o600)


@dataclass
class SeqLab(RcLab):
    hook: HookSink


@pytest.fixture(scope="module")
def seqlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeqLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("seq") / "incidents.db"
    stack = contextlib.ExitStack()
    try:
        if not reuse:
            lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
            _write_bots(lab)
            _alerts_to_webhook(lab)
            _provision(lab.inventory_dir)
        hook = HookSink(_hook_address(lab))  # up for the whole module: no alert waits in the outbox
        hook.start()
        stack.callback(hook.stop)
        r = RcLab(lab, lab.inventory_dir, store)
        for i in (1, 2):
            wait_healthy(r, i, timeout=240)
        yield SeqLab(lab, lab.inventory_dir, store, hook)
    finally:
        stack.close()
        if not reuse:
            lab.down(log=lambda _m: None)


def device(r: RcLab, index: int) -> str | None:
    """The fingerprint of the device the bot's live creds are linked as (the installed agent's function)."""
    auth = json.loads(r.ssh(index, "cat /etc/waops/bots/shop.json"))["auth_dir"]
    code = (
        "import json, sys; sys.path.insert(0, '/usr/local/lib/waops-host'); "
        "from waops_host.keys import device_fingerprint; "
        "print(json.dumps(device_fingerprint(json.load(open(sys.argv[1])))))"
    )
    return json.loads(
        r.ssh(index, f"python3 -I -c {shlex.quote(code)} {shlex.quote(auth + '/creds.json')}", check=True)
    )


def listed(r: RcLab, index: int) -> dict[str, dict[str, Any]]:
    return {b["id"]: b for b in backups(r, index)}


def since(r: RcLab, index: int, marker: str) -> list[dict[str, Any]]:
    return [b for b in backups(r, index) if b["id"] >= marker]


def now_marker() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def test_logged_out_then_creds_lost_restores_the_current_device(seqlab: RcLab) -> None:
    """A relink is backed up at once, and the next creds_lost restores that device, never the revoked one."""
    r = seqlab
    take_backup(r, 1)
    inject(r, 1, "logged_out")
    wait_cause(r, 1, "logged_out")
    rc, first = recover_cli(r, 1)
    assert (rc, first["outcome"]) == (0, "resolved"), first
    after_relink = [s for s in first["steps"] if s["name"] == "backup"]
    assert after_relink and after_relink[0]["result"] == "ok", first["steps"]
    clear(r, 1)
    # No round trip from here on: a message would move the ratchet past every backup (a restore of
    # stale keys is its own fault); the post-repair backup was taken right after recover's verify.
    wait_cause(r, 1, "healthy")
    new_device = device(r, 1)

    mark = now_marker()
    with auto_link_off(r):  # a QR now would never be scanned: only a restore can fix it
        inject(r, 1, "creds_lost")
        wait_cause(r, 1, "creds_lost")
        rc, second = recover_cli(r, 1)
    assert (rc, second["outcome"]) == (0, "resolved"), second
    names = [s["name"] for s in second["steps"]]
    assert "restore_session" in names and "reset_session" not in names, names
    assert second["link"] is None  # no QR
    assert device(r, 1) == new_device
    assert not [b for b in since(r, 1, mark) if b["reason"] == "pre-reset"]
    wait_healthy(r, 1)


def test_planted_newest_backup_is_refused_and_the_next_good_one_restored(seqlab: RcLab) -> None:
    r = seqlab
    take_backup(r, 1)
    good = max(b["id"] for b in backups(r, 1) if b["reason"] == "manual")
    planted = "29991231T000000Z-cron-ffffff"
    bdir = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["backup_dir"]
    # A copy named as the newest, one archive byte flipped, its verify mark forged to say ok.
    r.ssh(
        1,
        f"set -e; cd {bdir}; cp -a {good} {planted}; "
        f"python3 - {planted} <<'EOF'\n"
        "import json, sys\n"
        "d = sys.argv[1]\n"
        "m = json.load(open(d + '/manifest.json')); m['id'] = d; m['created_at'] = '2999-12-31T00:00:00+00:00'\n"
        "json.dump(m, open(d + '/manifest.json', 'w'))\n"
        "v = json.load(open(d + '/verify.json')); v['summary'].update(id=d, created_at=m['created_at'])\n"
        "json.dump(v, open(d + '/verify.json', 'w'))\n"
        "t = bytearray(open(d + '/auth.tar', 'rb').read()); t[700] ^= 0xFF; open(d + '/auth.tar', 'wb').write(t)\n"
        "EOF",
        check=True,
    )
    mark = now_marker()
    try:
        with auto_link_off(r):
            inject(r, 1, "creds_lost")
            wait_cause(r, 1, "creds_lost")
            rc, res = recover_cli(r, 1)
        assert (rc, res["outcome"]) == (0, "resolved"), res
        names = [s["name"] for s in res["steps"]]
        assert "restore_session" in names and "reset_session" not in names, names
        assert not [b for b in since(r, 1, mark) if b["reason"] == "pre-reset" and b["id"] < planted]
        assert listed(r, 1)[planted]["verified"] is False  # restore recorded the failed verify
        # The restored session is backed up and verified at once (not at the next cron backup).
        assert [s["result"] for s in res["steps"] if s["name"] == "backup"] == ["ok"], res["steps"]
        assert [b["verified"] for b in since(r, 1, mark) if b["reason"] == "post-repair"] == [True]
    finally:
        r.ssh(1, f"rm -rf {bdir}/{planted}")
        wait_healthy(r, 1)


def _shop_rows(r: RcLab) -> str:
    sql = (
        "SELECT count(*) || ':' || md5(coalesce(string_agg(key || value::text, ',' ORDER BY key), '')) "
        "FROM baileys_auth WHERE session = 'shop'"
    )
    cfg = json.loads(r.ssh(PG_HOST_INDEX, "cat /etc/waops/bots/shop.json"))["postgres"]
    return r.ssh(
        PG_HOST_INDEX,
        f"PGPASSFILE={cfg['password_file']} psql -At -h {cfg['host']} -p {cfg['port']} "
        f'-U {cfg["user"]} -d {cfg["dbname"]} -c "{sql}"',
        check=True,
    ).strip()


def test_postgres_stopped_mid_reset_fails_naming_it_and_leaves_the_bot_running(seqlab: RcLab) -> None:
    r = seqlab
    rows = _shop_rows(r)
    inject(r, PG_HOST_INDEX, "logged_out")
    wait_cause(r, PG_HOST_INDEX, "logged_out")
    r.lab.postgres.stop()
    try:
        rc, res = recover_cli(r, PG_HOST_INDEX)
        assert (rc, res["outcome"]) == (1, "failed"), res
        assert "PostgreSQL" in res["why"] and f":{r.lab.postgres.port}" in res["why"], res["why"]
        assert "reset refused or failed, keys untouched" in res["why"]
        inc = incident(r, res["incident_id"])
        assert inc.outcome == "failed"
        # Started again, not left stopped: without its database the bot fails to load its keys and
        # systemd keeps restarting it (active or activating), so it comes back with PostgreSQL.
        proc = facts(r, PG_HOST_INDEX)["process"]
        assert proc["status"] in ("active", "activating"), proc
    finally:
        r.lab.postgres.start()
    assert _shop_rows(r) == rows  # no row deleted
    clear(r, PG_HOST_INDEX)
    subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(r.inventory),
            "playbooks/reset_session.yml",
            "-e",
            "waops_bot=shop",
            "--limit",
            r.host(PG_HOST_INDEX).name,
        ],
        cwd=_repo(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    wait_healthy(r, PG_HOST_INDEX, timeout=240)


def test_two_controllers_at_once_make_one_reset(seqlab: RcLab, tmp_path: Path) -> None:
    """Two operators (their own controller state each) recover the same logged-out bot at the same time."""
    r = seqlab
    inject(r, 1, "logged_out")
    wait_cause(r, 1, "logged_out")
    mark = now_marker()
    results: list[tuple[int, str, str]] = []

    def operator(n: int) -> None:
        env = dict(os.environ, WAOPS_STORE=str(r.store), NO_COLOR="1", XDG_STATE_HOME=str(tmp_path / f"op{n}"))
        p = subprocess.run(
            [
                _waops(),
                "recover",
                "-i",
                str(r.inventory),
                r.host(1).name,
                "--bot",
                "shop",
                "--yes",
                "--output",
                "json",
                "--verify-timeout",
                "150",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=_repo(),
        )
        results.append((p.returncode, p.stdout, p.stderr))

    threads = [threading.Thread(target=operator, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 75], results
    _, out, _ = next(x for x in results if x[0] == 0)
    res = json.loads(out)["results"][0]
    assert res["outcome"] == "resolved"
    busy = next(x for x in results if x[0] == 75)
    err = " ".join(busy[2].split())  # rich may wrap the line
    assert [(x["host"], x["bot"]) for x in json.loads(busy[1])["results"]] == [(r.host(1).name, "shop")], busy[1]
    assert f"another repair is running on {r.host(1).name} (owner " in err and " since " in err, err
    assert len([b for b in since(r, 1, mark) if b["reason"] == "pre-reset"]) == 1
    from waops.incidents import connect

    with connect(r.store) as s:
        mine = [i for i in s.list(host=r.host(1).name, bot="shop") if i.detected_at.strftime("%Y%m%dT%H%M%SZ") >= mark]
    assert [i.outcome for i in mine] == ["resolved"], mine  # one incident: the other run opened none
    clear(r, 1)
    wait_healthy(r, 1)


def _agent(r: RcLab, cmd: str) -> tuple[int, str]:
    """A `waops-host` command on host 1 as cron runs it: exit code and everything it printed."""
    out = r.ssh(1, f"{cmd} 2>&1; echo \"rc=$?\"", check=False, timeout=180).rstrip().splitlines()
    return int(out[-1].removeprefix("rc=")), "\n".join(out[:-1])


def _doc(out: str) -> dict[str, Any]:
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def _check(r: RcLab) -> dict[str, Any]:
    """The scheduled health check on host 1, as cron runs it (its own state, the alert webhook)."""
    _rc, out = _agent(r, "waops-host check --bot shop --state-dir /var/lib/waops/agent --json")
    return _doc(out)["results"][0]


def test_backup_disk_full_alerts_once_and_backups_verify_again_after_space_returns(seqlab: SeqLab) -> None:
    """The backup filesystem fills up (a small tmpfs over the backup root, filled by a file): scheduled
    backups fail and the scheduled check alerts once, not once per run; a verify on the full disk leaves
    no `verify.json.tmp-*` and loses no verify mark; once space returns every backup verifies, the next
    cron backup is verified and the alert clears."""
    r = seqlab
    bdir = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["backup_dir"]
    base = os.path.dirname(bdir)
    mode = r.ssh(1, f"stat -c %a {base}").strip()
    r.ssh(1, f"mount -t tmpfs -o size=4m,mode={mode} waops-backup-disk {base}", check=True)
    try:
        for _ in range(2):  # two good cron backups on the new disk, and a check that saw them
            rc, out = _agent(r, "waops-host backup --bot shop --reason cron --json")
            assert rc == 0, out
        assert "backup_failed" not in _check(r)["active"]
        before = listed(r, 1)
        assert len(before) == 2 and all(b["verified"] for b in before.values()), before
        seen = len(r.hook.received)
        r.ssh(1, f"dd if=/dev/zero of={base}/filler bs=64k status=none 2>/dev/null; sync; true", timeout=120)
        assert r.ssh(1, f"df --output=avail -B1 {base} | tail -1").strip() == "0"

        for _ in range(3):  # three cron minutes: backup, the verify someone runs, the check
            rc, out = _agent(r, "waops-host backup --bot shop --reason cron --json")
            assert rc == 1 and "no space left on device" in out.lower(), out
            rc, out = _agent(r, "waops-host verify --bot shop --json")
            assert rc == 1 and "writing verify.json failed: No space left on device" in out, out
            assert "backup_failed" in _check(r)["active"]
        # Nothing lost while full: every mark still says verified, no tmp file or half backup left.
        assert {k: b["verified"] for k, b in listed(r, 1).items()} == {k: True for k in before}
        assert r.ssh(1, f"find {bdir} -name '*.tmp-*' -o -name '.tmp-*'").strip() == ""
        alerts = [m for m in r.hook.received[seen:] if m["condition"].startswith("backup")]
        assert [(m["condition"], m["event"]) for m in alerts] == [("backup_failed", "open")], alerts
        assert "cron backup at " in alerts[0]["text"] and "No space left on device" in alerts[0]["text"], alerts

        r.ssh(1, f"rm -f {base}/filler")  # space returns
        rc, out = _agent(r, "waops-host verify --bot shop --json")
        assert rc == 0, out
        assert all(b["ok"] for b in _doc(out)["results"][0]["backups"]), out
        rc, out = _agent(r, "waops-host backup --bot shop --reason cron --json")
        assert rc == 0, out
        new = _doc(out)["results"][0]
        assert new["verified"], new
        assert "backup_failed" not in _check(r)["active"]
        now = listed(r, 1)
        assert set(now) == {*before, new["id"]} and all(b["verified"] for b in now.values()), now
        assert facts(r, 1)["backups"]["latest_verified"]["id"] == new["id"]
        alerts = [m for m in r.hook.received[seen:] if m["condition"].startswith("backup")]
        assert [(m["condition"], m["event"]) for m in alerts] == [("backup_failed", "open"),
                                                                  ("backup_failed", "clear")], alerts
    finally:
        r.ssh(1, f"umount {base}", check=False)


def test_a_failed_restore_names_what_it_refused_and_leaves_the_bot_running(seqlab: SeqLab) -> None:
    """Every backup is damaged on disk (their verify marks still say ok): the restore playbook fails with
    the agent's own reason (which backups it refused and why), not an empty one, and the bot runs on its
    untouched keys."""
    r = seqlab
    take_backup(r, 1)
    bdir = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["backup_dir"]
    ids = sorted(listed(r, 1))
    before = device(r, 1)
    for bid in ids:  # one byte of every archive
        r.ssh(1, f"printf 'X' | dd of={bdir}/{bid}/auth.tar bs=1 seek=700 conv=notrunc status=none")
    try:
        proc = subprocess.run(["ansible-playbook", "-i", str(r.inventory), "playbooks/restore_session.yml", "-e",
                               "waops_bot=shop", "--limit", r.host(1).name], cwd=_repo(), capture_output=True,
                              text=True, timeout=600)
        out = " ".join(proc.stdout.split())
        assert proc.returncode != 0, out[-3000:]
        assert "shop: restore failed, keys untouched, bot started again: " in out, out[-3000:]
        why = out.split("bot started again: ", 1)[1]
        assert why[:1] not in ('"', "'", "") and "checksum mismatch" in why, why[:1000]
        assert any(bid in why for bid in ids), why[:1000]
        assert device(r, 1) == before  # the live keys are the ones it had
        wait_healthy(r, 1)
    finally:
        r.ssh(1, "rm -rf " + " ".join(f"{bdir}/{bid}" for bid in ids))
        take_backup(r, 1)


def _vaulted_copy(r: RcLab, tmp: Path) -> tuple[Path, dict[str, str]]:
    """The lab's inventory as the README recommends it: the PostgreSQL password and every host_vars
    file vault-encrypted, ANSIBLE_VAULT_PASSWORD_FILE set."""
    import yaml

    inv = tmp / "inventory"
    shutil.copytree(r.inventory, inv)
    hosts = json.loads((inv / "hosts.yml").read_text())
    secret = hosts["all"]["vars"].pop("waops_pg_password")
    (inv / "hosts.yml").write_text(json.dumps(hosts))
    group = inv / "group_vars" / "all.yml"
    doc = yaml.safe_load(group.read_text()) or {}
    group.write_text(yaml.safe_dump({**doc, "waops_pg_password": secret}))
    pw = tmp / "vault-pass"
    pw.write_text("correct horse\n")
    files = [group, *sorted((inv / "host_vars").glob("*.yml"))]
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(pw), *map(str, files)], check=True,
                   capture_output=True)
    assert all(f.read_text().startswith("$ANSIBLE_VAULT") for f in files)
    env = dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(pw), NO_COLOR="1", WAOPS_STORE=str(tmp / "i.db"),
               XDG_STATE_HOME=str(tmp / "state"))
    return inv, env


def test_a_vaulted_inventory_works_for_every_command(seqlab: SeqLab, tmp_path: Path) -> None:
    """diagnose, recover, qr, provision, migrate and move read a vault-encrypted inventory and reach the
    lab hosts; none fails on the vault, prints a traceback or the secret."""
    r = seqlab
    inv, env = _vaulted_copy(r, tmp_path)
    h1, h2 = r.host(1).name, r.host(2).name
    secret = json.loads(r.inventory.joinpath("hosts.yml").read_text())["all"]["vars"]["waops_pg_password"]

    def waops(*args: str, timeout: float = 600) -> tuple[int, str, str]:
        p = subprocess.run([_waops(), *args, "-i", str(inv)], capture_output=True, text=True, env=env,
                           timeout=timeout, cwd=_repo())
        both = p.stdout + p.stderr
        assert "Traceback" not in both and "vault password" not in both.lower() and secret not in both, both[-3000:]
        assert "AnsibleParserError" not in both and "Decryption failed" not in both, both[-3000:]
        return p.returncode, p.stdout, p.stderr

    rc, out, err = waops("diagnose", h1, "--output", "json")
    assert rc == 0 and json.loads(out)["results"][0]["cause"] == "healthy", (out, err)
    rc, out, err = waops("recover", h2, "--bot", "shop", "--yes", "--output", "json")
    assert rc == 0 and json.loads(out)["results"][0]["outcome"] == "healthy", (out, err)
    rc, out, err = waops("qr", h1, "--bot", "shop", "--output", "json")
    assert rc == 1, (out, err)  # a linked bot shows no QR: read from its host through the vaulted inventory
    rc, out, err = waops("provision", h2, "--check", timeout=1800)
    assert rc == 0, (out[-3000:], err[-3000:])  # check mode needs the vaulted PostgreSQL password
    rc, out, err = waops("migrate", h1, "--bot", "shop", "--to", "files", "--output", "json")
    assert rc == 2 and "already uses the files store" in out + err, (out, err)  # it read the host's store
    rc, out, err = waops("move", "shop", "--to", h2)
    assert rc == 2 and h1 in out + err and h2 in out + err, (out, err)  # shop is on both hosts in the vault
