"""Benchmark of self-healing on Event-Driven Ansible: per cause, the time from the injected fault to the
bot verified healthy by waops.ops.recover, run by the real ansible-rulebook with nobody typing.
Run on demand (root, the lab); prints a table; asserts nothing.

    python3 tests/bench/bench_eda.py [--rounds 5] [--causes process_down]

Each round: fault injected, the host's check run at once (cron runs it every 5 minutes: add up to that
for detection on a real host until the keep-alive agent reports closes at once), the signed webhook, the
rulebook, the recover playbook (diagnose, restart, verify), the incident closed. The engine is restarted
between rounds, since its throttle lets one recovery per bot through every 10 minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "controller"))  # this checkout's waops

from tests.conftest import _lab
from tests.lab.test_eda_recover import auto_recover_once, provision_with_webhook


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--causes", default="process_down")
    args = ap.parse_args()
    lab = _lab("eda-bench")
    lab.up(1, ("pm2",), log=lambda _m: None)
    try:
        (host,) = lab.hosts()
        engine = provision_with_webhook(lab, Path(tempfile.mkdtemp(prefix="eda-bench")))
        results: dict[str, list[tuple[float, float]]] = {}
        for cause in args.causes.split(","):
            for _ in range(args.rounds):
                engine.start()
                try:
                    seconds, inc = auto_recover_once(engine, host, cause)
                finally:
                    engine.stop()
                results.setdefault(cause, []).append((seconds, inc.mttr_s or float("nan")))
                print(f"{cause}: {seconds:.1f} s to verified healthy ({inc.outcome}, trigger {inc.trigger})",
                      flush=True)
        print(f"\n{'cause':<16}{'n':>3}{'median s':>10}{'p90 s':>8}{'max s':>8}   runbook by hand: 600-900 s")
        for cause, rows in results.items():
            totals = [r[0] for r in rows]
            print(f"{cause:<16}{len(rows):>3}{statistics.median(totals):>10.1f}{p90(totals):>8.1f}"
                  f"{max(totals):>8.1f}")
    finally:
        lab.down(log=lambda _m: None)


if __name__ == "__main__":
    main()
