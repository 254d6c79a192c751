"""`waops recover` on real lab hosts when incidents follow each other, two operators act at once, a
backup is planted, or a part fails in the middle of a repair.

Its own lab (same shape as test_recover's: host 1 pm2 + files, host 2 systemd + PostgreSQL with a
neighbour bot `crm`), so it can run beside the fault matrix. WAOPS_TEST_LAB=<name> reuses a lab.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="module")
def seqlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("seq") / "incidents.db"
    try:
        if not reuse:
            lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
            _write_bots(lab)
            _provision(lab.inventory_dir)
        r = RcLab(lab, lab.inventory_dir, store)
        for i in (1, 2):
            wait_healthy(r, i, timeout=240)
        yield r
    finally:
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
    err = " ".join(next(x for x in results if x[0] == 75)[2].split())  # rich may wrap the line
    assert f"another repair is running on {r.host(1).name} (owner " in err and " since " in err, err
    assert len([b for b in since(r, 1, mark) if b["reason"] == "pre-reset"]) == 1
    from waops.incidents import connect

    with connect(r.store) as s:
        mine = [i for i in s.list(host=r.host(1).name, bot="shop") if i.detected_at.strftime("%Y%m%dT%H%M%SZ") >= mark]
    assert [i.outcome for i in mine] == ["resolved"], mine  # one incident: the other run opened none
    clear(r, 1)
    wait_healthy(r, 1)
