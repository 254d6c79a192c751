"""Benchmark of `waops recover` on the lab: per cause, the time from the injected fault to a verified
healthy bot (a test message answered), beside the runbook's 10-15 minute manual target.
Run on demand (root, the lab); prints a table and writes JSON; asserts nothing.

    python3 tests/bench/bench_recover.py [--lab NAME] [--causes process_down,logged_out,...] [--json out.json]
        [--seq-lab NAME] [--sequences conflict+keys,...|none]

--lab reuses a lab that is up and provisioned the way tests/lab/test_recover.py makes it (WAOPS_TEST_LAB);
without it a lab named rc-bench is brought up, provisioned and brought down.
Phases per cause: detect (fault injected -> the diagnosis names it, as a health check would),
recover (the `waops recover --yes` run: diagnose, plan, steps, verify) and total (fault -> verified).
Sequence cases (one fault leading to another, or a part failing mid-repair) print beside the single
faults: most run on a second lab laid out as tests/lab/test_recover_chains.py makes it (--seq-lab reuses
one); the PostgreSQL one runs on the single-fault lab's PostgreSQL host after the matrix. Each sequence
row ends with what the issue asks of it (`ok`, or what did not hold): the bench asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "controller"))  # this checkout's waops

from tests.lab.test_recover import (
    MATRIX,
    PG_HOST_INDEX,
    RcLab,
    _provision,
    _repo,
    _write_bots,
    auto_link_off,
    backups,
    clear,
    facts,
    inject,
    recover_cli,
    restore,
    take_backup,
    wait_cause,
    wait_healthy,
)

RUNBOOK_TARGET_S = (10 * 60, 15 * 60)


# --- sequence cases: name -> function(lab) -> (t_fault, t_detected, rc, result); each leaves the bot healthy

def _seq_conflict_keys(r: RcLab) -> tuple[float, float, int, dict]:
    from tests.lab.test_recover_chains import CONTACT, contacts_writing

    r.sim.send_message(r.phone(1), "hello", timeout=10, contact=CONTACT)
    take_backup(r, 1)
    time.sleep(1.1)
    t0 = time.monotonic()
    try:
        r.sim.fault(r.phone(1), "shared_keys")
        inject(r, 1, "conflict")
        wait_cause(r, 1, "conflict")
        detected = time.monotonic()
        with contacts_writing(r):
            rc, res = recover_cli(r, 1, "--verify-timeout", "90", timeout=900)
    finally:
        clear(r, 1)
    return t0, detected, rc, res


def _seq_duplicate_second_host(r: RcLab) -> tuple[float, float, int, dict]:
    from tests.lab.test_recover_chains import copy_to_second_host, undo_copy

    t0 = time.monotonic()
    try:
        copy_to_second_host(r)
        wait_cause(r, 1, "conflict")
        detected = time.monotonic()
        rc, res = recover_cli(r, 1, "--verify-timeout", "90", timeout=900)
    finally:
        undo_copy(r)
    return t0, detected, rc, res


def _seq_known_bad(r: RcLab) -> tuple[float, float, int, dict]:
    good = facts(r, 1)["library"]["release"]
    root = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["release_root"]
    before = set(r.ssh(1, f"ls {root}/releases").split())
    t0 = time.monotonic()
    try:
        inject(r, 1, "known_bad_version")
        wait_cause(r, 1, "library_mismatch")
        detected = time.monotonic()
        rc, res = recover_cli(r, 1, timeout=900)
    finally:
        from tests.lab.test_recover import switch_release

        switch_release(r, 1, good)
        made = set(r.ssh(1, f"ls {root}/releases").split()) - before
        if made:
            r.ssh(1, "rm -rf " + " ".join(f"{root}/releases/{m}" for m in made))
    return t0, detected, rc, res


def _seq_logged_out_then_creds_lost(r: RcLab) -> tuple[float, float, int, dict]:
    """A relink, then lost creds: timed from the second fault (the restore of the new device, no QR)."""
    take_backup(r, 1)
    inject(r, 1, "logged_out")
    wait_cause(r, 1, "logged_out")
    rc, first = recover_cli(r, 1, timeout=900)
    clear(r, 1)
    assert first["outcome"] == "resolved", first
    wait_cause(r, 1, "healthy")
    t0 = time.monotonic()
    with auto_link_off(r):  # only a restore may fix it: a QR now would never be scanned
        inject(r, 1, "creds_lost")
        wait_cause(r, 1, "creds_lost")
        detected = time.monotonic()
        rc, res = recover_cli(r, 1, timeout=900)
    names = [s["name"] for s in res["steps"]]
    res["check"] = _holds(("relink backed up", any(s["name"] == "backup" and s["result"] == "ok"
                                                   for s in first["steps"])),
                          ("current device restored", "restore_session" in names and res["outcome"] == "resolved"),
                          ("no QR", res["link"] is None and "reset_session" not in names))
    return t0, detected, rc, res


def _seq_planted_newest(r: RcLab) -> tuple[float, float, int, dict]:
    """A forged backup named as the newest (one archive byte flipped, its verify mark saying ok), then
    creds_lost: refused, the next good backup restored, no reset."""
    take_backup(r, 1)
    good = max(b["id"] for b in backups(r, 1) if b["reason"] == "manual")
    planted = "29991231T000000Z-cron-ffffff"
    bdir = json.loads(r.ssh(1, "cat /etc/waops/bots/shop.json"))["backup_dir"]
    r.ssh(1, f"set -e; cd {bdir}; cp -a {good} {planted}; "
             f"python3 - {planted} <<'EOF'\n"
             "import json, sys\n"
             "d = sys.argv[1]\n"
             "m = json.load(open(d + '/manifest.json')); m['id'] = d; m['created_at'] = '2999-12-31T00:00:00+00:00'\n"
             "json.dump(m, open(d + '/manifest.json', 'w'))\n"
             "v = json.load(open(d + '/verify.json')); v['summary'].update(id=d, created_at=m['created_at'])\n"
             "json.dump(v, open(d + '/verify.json', 'w'))\n"
             "t = bytearray(open(d + '/auth.tar', 'rb').read()); t[700] ^= 0xFF; open(d + '/auth.tar', 'wb').write(t)\n"
             "EOF", check=True)
    t0 = time.monotonic()
    try:
        with auto_link_off(r):
            inject(r, 1, "creds_lost")
            wait_cause(r, 1, "creds_lost")
            detected = time.monotonic()
            rc, res = recover_cli(r, 1, timeout=900)
        refused = next((b for b in backups(r, 1) if b["id"] == planted), {}).get("verified") is False
        names = [s["name"] for s in res["steps"]]
        res["check"] = _holds(("planted backup refused", refused),
                              ("a good one restored", "restore_session" in names and res["outcome"] == "resolved"),
                              ("no reset", "reset_session" not in names))
    finally:
        r.ssh(1, f"rm -rf {bdir}/{planted}")
    return t0, detected, rc, res


def _seq_postgres_down_mid_reset(r: RcLab) -> tuple[float, float, int, dict]:
    """logged_out on the PostgreSQL host, PostgreSQL stopped before the reset: failed, the reason names
    PostgreSQL, the bot running (or restarting), no row deleted. Runs on the single-fault lab."""
    from tests.lab.test_recover_sequences import _shop_rows

    rows = _shop_rows(r)
    t0 = time.monotonic()
    inject(r, PG_HOST_INDEX, "logged_out")
    wait_cause(r, PG_HOST_INDEX, "logged_out")
    detected = time.monotonic()
    r.lab.postgres.stop()
    try:
        rc, res = recover_cli(r, PG_HOST_INDEX, timeout=900)
        status = facts(r, PG_HOST_INDEX)["process"]["status"]
    finally:
        r.lab.postgres.start()
    res["check"] = _holds(("failed", res["outcome"] == "failed"),
                          ("reason names PostgreSQL", "PostgreSQL" in res["why"]),
                          ("bot running", status in ("active", "activating")),
                          ("no row deleted", _shop_rows(r) == rows))
    clear(r, PG_HOST_INDEX)
    subprocess.run(["ansible-playbook", "-i", str(r.inventory), "playbooks/reset_session.yml", "-e",
                    "waops_bot=shop", "--limit", r.host(PG_HOST_INDEX).name], cwd=_repo(), capture_output=True,
                   timeout=300, check=False)  # back to a linked bot (auto-link is on)
    return t0, detected, rc, res


def _holds(*conds: tuple[str, bool]) -> str:
    missed = [name for name, ok in conds if not ok]
    return "ok" if not missed else "NOT: " + ", ".join(missed)


SEQUENCES = {
    "conflict+keys": _seq_conflict_keys,
    "duplicate 2nd host": _seq_duplicate_second_host,
    "known-bad release": _seq_known_bad,
    "logged_out->creds_lost": _seq_logged_out_then_creds_lost,
    "planted newest": _seq_planted_newest,
}
# Sequences that need the single-fault lab's PostgreSQL host (index PG_HOST_INDEX)
PG_SEQUENCES = {
    "pg down mid-reset": _seq_postgres_down_mid_reset,
}
ALL_SEQUENCES = [*SEQUENCES, *PG_SEQUENCES]


def bench_sequence(r: RcLab, name: str) -> dict:
    index = PG_HOST_INDEX if name in PG_SEQUENCES else 1
    try:
        t0, detected, rc, res = {**SEQUENCES, **PG_SEQUENCES}[name](r)
    except AssertionError as exc:
        return {"cause": name, "host": index, "error": str(exc)}
    done = time.monotonic()
    with contextlib.suppress(AssertionError):
        wait_healthy(r, index, timeout=240)
    return {"cause": name, "host": index, "outcome": res["outcome"], "exit": rc,
            "detect_s": round(detected - t0, 1), "recover_s": round(done - detected, 1),
            "total_s": round(done - t0, 1), "mttr_s": res["mttr_s"], "human_wait_s": res["human_wait_s"],
            "check": res.get("check", ""), "steps": [f"{s['name']}:{s['result']}" for s in res["steps"]]}


def run_sequences(lab_name: str | None, wanted: list[str]) -> list[dict]:
    from tests.conftest import _lab
    from tests.lab.test_recover_chains import setup

    lab = _lab(lab_name or "seq-bench")
    try:
        r = RcLab(lab, lab.inventory_dir, Path("/tmp/waops-bench-recover-seq.db"))
        if not lab_name:
            setup(r)
        wait_healthy(r, 1)
        return [bench_sequence(r, n) for n in wanted]
    finally:
        if not lab_name:
            lab.down(log=lambda _m: None)


def bench_one(r: RcLab, index: int, cause: str, params: dict) -> dict:
    take_backup(r, index)
    release = facts(r, index)["library"]["release"]
    clearer = None
    t0 = time.monotonic()
    try:
        with auto_link_off(r) if cause == "creds_lost" else contextlib.nullcontext():
            inject(r, index, cause, **params)
            try:
                wait_cause(r, index, cause)
            except AssertionError as exc:
                return {"cause": cause, "host": index, "error": str(exc)}
            detected = time.monotonic()
            if cause == "network":
                import threading

                clearer = threading.Timer(15, clear, (r, index))
                clearer.start()
            rc, res = recover_cli(r, index)
        done = time.monotonic()
    finally:
        with contextlib.suppress(AssertionError):
            restore(r, index, cause, clearer, release)  # back to healthy on the release of the start
    return {"cause": cause, "host": index, "outcome": res["outcome"], "exit": rc,
            "detect_s": round(detected - t0, 1), "recover_s": round(done - detected, 1),
            "total_s": round(done - t0, 1), "mttr_s": res["mttr_s"], "human_wait_s": res["human_wait_s"],
            "steps": [f"{s['name']}:{s['result']}" for s in res["steps"]]}


def run_single(lab_name: str | None, causes: str, pg_seqs: list[str]) -> tuple[list[dict], list[dict]]:
    """The fault matrix (unless causes is 'none'), then the sequences that need its PostgreSQL host."""
    from tests.conftest import _lab

    lab = _lab(lab_name or "rc-bench")
    try:
        if not lab_name:
            lab.up(2, ("pm2", "systemd"), log=lambda _m: None)
            _write_bots(lab)
            _provision(lab.inventory_dir)
        r = RcLab(lab, lab.inventory_dir, Path("/tmp/waops-bench-recover.db"))
        for i in (1, 2):
            wait_healthy(r, i)
        wanted = set(filter(None, causes.split(",")))
        rows = [] if causes == "none" else [bench_one(r, i, c, p) for i, c, _o, _b, p in MATRIX
                                            if not wanted or c in wanted]
        return rows, [bench_sequence(r, n) for n in pg_seqs]
    finally:
        if not lab_name:
            lab.down(log=lambda _m: None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", default=None, help="reuse this lab (up and provisioned)")
    ap.add_argument("--causes", default="", help="comma-separated causes (default: the whole matrix; 'none': skip)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seq-lab", default=None, help="reuse this lab for the sequence cases")
    ap.add_argument("--sequences", default="", help=f"comma-separated, 'none' to skip (default: all of "
                                                     f"{', '.join(ALL_SEQUENCES)})")
    args = ap.parse_args()
    wanted = [n for n in ALL_SEQUENCES if not args.sequences or n in args.sequences.split(",")]
    wanted = [] if args.sequences == "none" else wanted
    pg_seqs = [n for n in wanted if n in PG_SEQUENCES]
    rows, pg_rows = (run_single(args.lab, args.causes, pg_seqs) if args.causes != "none" or pg_seqs
                     else ([], []))
    seqs = [n for n in wanted if n in SEQUENCES]
    seq_rows = [*(run_sequences(args.seq_lab, seqs) if seqs else []), *pg_rows]
    lo, hi = RUNBOOK_TARGET_S
    print(f"{'cause':<23}{'host':>5}{'outcome':>13}{'detect':>9}{'recover':>9}{'total':>9}   vs runbook {lo // 60}-"
          f"{hi // 60} min")
    for row in [*rows, *([{"cause": "-- sequences", "host": 0, "error": ""}] if seq_rows else []), *seq_rows]:
        if row["cause"].startswith("--"):
            print(row["cause"])
            continue
        if "error" in row:
            print(f"{row['cause']:<23}{row['host']:>5}  not detected: {row['error'][:80]}")
            continue
        check = f"[{row['check']}] " if row.get("check") else ""
        versus = (f"{lo / max(row['total_s'], 0.1):.0f}x faster than {lo // 60} min"
                  if row["outcome"] in ("resolved", "rolled_back") else "(not a repair)")
        print(f"{row['cause']:<23}{row['host']:>5}{row['outcome']:>13}{row['detect_s']:>8.1f}s{row['recover_s']:>8.1f}s"
              f"{row['total_s']:>8.1f}s   {versus:<24}  {check}{' '.join(row['steps'])}")
    if args.json:
        args.json.write_text(json.dumps({"single": rows, "sequences": seq_rows}, indent=2))


if __name__ == "__main__":
    main()
