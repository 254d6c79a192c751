"""The SQLite auth store and store migration on a real lab host.

One host under pm2 with two bots: `shop` on the SQLite store, where creds_lost and corrupt_keys are made
and recovered with one `waops recover --yes`; `mig` on the files store, moved with `waops migrate` to
SQLite, then to PostgreSQL, then back to files, answering messages throughout on the device it linked
first (the simulator's record of links: no new device, same link time).

Set WAOPS_TEST_LAB=<name> to reuse a lab that is up and provisioned (development); it is left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.test_recover import (
    RcLab,
    _provision,
    _repo,
    _waops,
    auto_link_off,
    backups,
    clear,
    diagnose_cli,
    facts,
    incident,
    inject,
    recover_cli,
    take_backup,
    wait_cause,
    wait_healthy,
)

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "sqstore"


@pytest.fixture(scope="module")
def sqlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("sq") / "incidents.db"
    try:
        if not reuse:
            lab.up(1, ("pm2",), log=lambda _m: None)
            h = lab.hosts()[0]
            shop = dict(h.bots[0], auth_store="sqlite")
            mig = {"name": "mig", "phone": shop["phone"][:-2] + "66", "service_manager": "pm2", "auth_store": "files"}
            host_vars = lab.inventory_dir / "host_vars"
            host_vars.mkdir(exist_ok=True)
            (host_vars / f"{h.name}.yml").write_text(json.dumps({"waops_bots": [shop, mig]}))
            state = json.loads(lab.state_file.read_text())
            state["hosts"][0]["bots"] = [shop, mig]
            lab.state_file.write_text(json.dumps(state, indent=2))
            _provision(lab.inventory_dir)
        r = RcLab(lab, lab.inventory_dir, store)
        wait_healthy(r, 1, "shop", timeout=240)
        wait_healthy(r, 1, "mig", timeout=240)
        yield r
    finally:
        if not reuse:
            lab.down(log=lambda _m: None)


def test_shop_runs_on_sqlite(sqlab: RcLab) -> None:
    auth = facts(sqlab, 1)["auth"]
    assert auth["store"] == "sqlite" and auth["db"]["reachable"] and auth["db"]["creds"]["linked"], auth
    assert auth["db"]["by_type"].get("pre-key", 0) > 0
    sqlab.ssh(1, "test ! -e /var/lib/waops/bots/shop/auth/creds.json")  # nothing in the files store
    take_backup(sqlab, 1)
    latest = backups(sqlab, 1)[0]
    assert latest["verified"] and latest["creds_linked"], latest


@pytest.mark.parametrize(("cause", "allowed", "reasons", "params"), [
    ("creds_lost", ("resolved",), ("pre-restore",), {}),
    ("corrupt_keys", ("resolved", "rolled_back"), ("pre-prune",), {"burst": 12}),
])
def test_fault_on_a_sqlite_bot_is_recovered(sqlab: RcLab, cause: str, allowed: tuple[str, ...],
                                           reasons: tuple[str, ...], params: dict[str, Any]) -> None:
    r = sqlab
    take_backup(r, 1)
    injected_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        with auto_link_off(r) if cause == "creds_lost" else _null():
            inject(r, 1, cause, **params)
            wait_cause(r, 1, cause)
            rc, diag = diagnose_cli(r, 1)
            assert (rc, diag["cause"]) == (1, cause), diag
            rc, res = recover_cli(r, 1)
        assert res["outcome"] in allowed and res["cause"] == cause, res
        assert rc == (0 if res["outcome"] == "resolved" else 1), res
        inc = incident(r, res["incident_id"])
        assert inc is not None and inc.cause == cause
        made = [b for b in backups(r, 1) if b["reason"] in reasons and b["id"] >= injected_at]
        assert made and all(b["verified"] for b in made), backups(r, 1)
        auth = facts(r, 1)["auth"]
        assert auth["store"] == "sqlite" and auth["db"]["creds"]["linked"], auth
    finally:
        clear(r, 1)
        r.sim.set_auto_link(True)
    wait_healthy(r, 1, timeout=240)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


def devices(r: RcLab, phone: str) -> list[tuple[str, float]]:
    doc = r.sim.phone(phone)
    return sorted((d["id"], d["linked_at"]) for d in doc["devices"] if not d.get("removed"))


def migrate_cli(r: RcLab, to: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([_waops(), "migrate", "-i", str(r.inventory), r.host(1).name, "--bot", "mig",
                           "--to", to, "--output", "json"], capture_output=True, text=True, timeout=1800,
                          cwd=_repo(), env=dict(os.environ, NO_COLOR="1"))
    try:
        return proc.returncode, json.loads(proc.stdout)["results"][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-3000:]}") from None


def test_files_bot_migrated_to_sqlite_postgres_and_back_stays_linked(sqlab: RcLab) -> None:
    r = sqlab
    phone = r.phone(1, "mig")
    linked = devices(r, phone)
    assert len(linked) == 1
    with auto_link_off(r):  # a bot that asked for a new link would stay unlinked: the verify would fail
        for src, to in (("files", "sqlite"), ("sqlite", "postgres"), ("postgres", "files")):
            rc, res = migrate_cli(r, to)
            assert (rc, res["outcome"], res["from"], res["to"]) == (0, "migrated", src, to), res
            auth = facts(r, 1, "mig")["auth"]
            assert auth["store"] == to, auth
            creds = auth["creds"] if to == "files" else auth["db"]["creds"]
            assert creds["linked"], auth
            assert devices(r, phone) == linked, f"{src} -> {to}: a new link was made"
            made = [b for b in backups(r, 1, "mig") if b["reason"] == "pre-migrate"]
            assert made and made[0]["verified"], made
            assert "is up" in r.sim.send_message(phone, "test", timeout=10)
    assert facts(r, 1)["auth"]["store"] == "sqlite"  # the neighbour stayed where it was
