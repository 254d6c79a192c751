"""Benchmark of self-healing on Event-Driven Ansible: per cause, the time from the injected fault to the bot
verified healthy by waops.ops.recover, run by the real ansible-rulebook with nobody typing, beside the
runbook's 10-15 minutes and today's alert-then-operator path. Run on demand (root, the lab); prints a
table; asserts nothing.

    python3 tests/bench/bench_eda.py [--rounds 5] [--causes process_down,crash,...] [--no-operator]

Each round: fault injected (the lab's injector), the host's check run every few seconds as the detection
(cron runs it every 5 minutes on a real host, and waits waops_host_check_session_down_minutes before it
alerts: the keep-alive agent's close report is what makes detection take seconds), the signed webhook, the
rulebook, the recover playbook (diagnose, plan, repair, verify with a test message, incident closed). The
figure is fault -> incident closed as verified, detection included. The engine is restarted between
rounds, since its throttle lets one recovery per bot through every 10 minutes. logged_out needs the phone:
its row is the 401 -> pairing code on the operator's Telegram (the phone links at once), and the total.

The alert-then-operator path is measured in parts: the alert comes when the 5-minute check has seen the
session down for 10 minutes (the role's defaults: 600-900 s after the fault), then a person reads it and
types `waops recover --yes` (the reaction is not measurable here: it is a night's sleep or a meeting), and
the CLI's own repair time is measured once per cause on the same lab.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "controller"))  # this checkout's waops

from tests.conftest import _lab
from tests.lab.test_eda_recover import (
    TelegramStandIn,
    auto_recover_once,
    inject_fault,
    provision_with_webhook,
)
from tests.lab.test_provision_support import health, wait_until

CAUSES = "process_down,crash,library_mismatch,conflict,creds_lost,corrupt_keys,logged_out"
ALERT_AFTER_S = (600, 900)  # session_down after 10 min, seen by a check every 5 min (roles/waops_host defaults)
GOAL_S = 90


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def operator_recover(lab: Any, host: Any, cause: str, store: Path) -> float:
    """Today's path after the alert: the fault is there, a person runs `waops recover --yes`; its seconds."""
    from waops.diagnose import diagnose

    inject_fault(lab, host, cause)

    def named() -> bool:
        doc = json.loads(lab.ssh(host, "waops-host facts --json --bot shop"))
        return diagnose(doc["bots"][0]).cause == cause

    wait_until(named, 120, interval=2)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "waops", "recover", "-i", str(lab.inventory_dir), host.name, "--bot",
                    "shop", "--yes", "--output", "json"], env=dict(os.environ, WAOPS_STORE=str(store)),
                   capture_output=True, text=True, timeout=900)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--causes", default=CAUSES)
    ap.add_argument("--no-operator", action="store_true", help="skip measuring the CLI path")
    args = ap.parse_args()
    lab = _lab("eda-bench")
    telegram = TelegramStandIn()
    telegram.start()
    lab.up(1, ("pm2",), log=lambda _m: None)
    try:
        from waops_lab.sandbox.client import SimulatorClient

        (host,) = lab.hosts()
        phone = next(b["phone"] for b in host.bots if b["name"] == "shop")
        tmp = Path(tempfile.mkdtemp(prefix="eda-bench"))
        engine = provision_with_webhook(lab, tmp, telegram)
        sim = SimulatorClient(lab.control_url)
        sim.set_auto_link(False)  # only the bench's phone links, with the code Telegram got
        auto: dict[str, list[float]] = {}
        code_s: list[float] = []
        operator: dict[str, float] = {}
        for cause in args.causes.split(","):
            for _ in range(args.rounds):
                def phone_links(faulted: float) -> None:
                    wait_until(lambda: bool(telegram.pairing_codes(faulted)), 300, interval=0.5)
                    at, code = telegram.pairing_codes(faulted)[0]
                    code_s.append(at - faulted)
                    sim.link(phone, code=code)

                engine.start()
                try:
                    seconds, inc = auto_recover_once(engine, host, cause,
                                                     phone_links if cause == "logged_out" else None)
                finally:
                    engine.stop()
                ok = inc.outcome in ("resolved", "rolled_back")
                if ok:
                    auto.setdefault(cause, []).append(seconds)
                print(f"{cause}: {seconds:.1f} s to {inc.outcome} (trigger {inc.trigger}, "
                      f"MTTR {inc.mttr_s or 0:.1f} s, steps {'/'.join(s.name for s in inc.steps)})", flush=True)
                wait_until(lambda: health(lab, host).get("connection") == "open", 120)
            if not args.no_operator and cause != "logged_out":
                operator[cause] = operator_recover(lab, host, cause, tmp / "operator.db")
                print(f"{cause}: waops recover --yes by hand took {operator[cause]:.1f} s", flush=True)
                wait_until(lambda: health(lab, host).get("connection") == "open", 120)
        lo, hi = ALERT_AFTER_S
        print(f"\nfault -> verified healthy with no human (EDA, detection included), goal p90 < {GOAL_S} s")
        print(f"{'cause':<17}{'n':>3}{'median s':>10}{'p90 s':>8}{'max s':>8}   {'alert-then-operator s':>24}"
              "   runbook by hand")
        for cause, totals in auto.items():
            # A Bad MAC flood keeps the session open: no session_down, so the alert is decrypt_flood's, which
            # has no hold (within the minute of the quick check; before it there was no alert at all).
            alert = (0, 60) if cause == "corrupt_keys" else (lo, hi)
            by_hand = (f"{alert[0] + operator[cause]:.0f}-{alert[1] + operator[cause]:.0f} + reaction"
                       if cause in operator else "-")
            print(f"{cause:<17}{len(totals):>3}{statistics.median(totals):>10.1f}{p90(totals):>8.1f}"
                  f"{max(totals):>8.1f}   {by_hand:>24}   600-900 s")
        if code_s:
            print(f"logged_out: 401 -> pairing code on Telegram median {statistics.median(code_s):.1f} s, "
                  f"p90 {p90(code_s):.1f} s, max {max(code_s):.1f} s (goal < 60 s); the total above includes "
                  "the phone linking at once")
        print(f"alert-then-operator: the alert {lo}-{hi} s after the fault (session_down 10 min, check every "
              "5 min), then a person's reaction, then waops recover (measured above)")
    finally:
        telegram.stop()
        lab.down(log=lambda _m: None)


if __name__ == "__main__":
    main()
