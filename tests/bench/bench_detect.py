"""Benchmark of detection: what the every-minute quick check costs per bot, and how long a logout takes to
reach the EDA event source through the keep-alive agent's close report. Run on demand (root, the lab);
prints figures; asserts nothing.

    python3 tests/bench/bench_detect.py [--bots 3] [--runs 20]

One lab host (pm2) with --bots bots, each posting to the collection's event source run in this process.
1. Cost: on the host, `waops-host check --quick` (what cron runs every minute) and the full `check` (every
   5 minutes), --runs times each for all bots at once; wall time (median) and CPU time (user + system of
   the agent and its children, mean) divided by the number of bots.
2. Latency: for each bot, a 401 set in the simulator -> the `open session_down` event on the source's
   queue (the report path: the host keeps the shipped 10-minute hold, so the quick check cannot be it).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "controller"))  # this checkout's waops

from tests.conftest import _lab
from tests.lab.test_eda_detect import EventSource, _free_port, detect_once, provision_posting_to

COST = r"""
import json, resource, subprocess, sys, time
argv, runs = json.loads(sys.argv[1]), int(sys.argv[2])
walls, before = [], resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(runs):
    t = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    walls.append(time.monotonic() - t)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / runs
print(json.dumps({"wall_s": sorted(walls)[runs // 2], "cpu_s": cpu}))
"""


def cost(lab, host, argv: list[str], runs: int) -> dict[str, float]:
    out = lab.ssh(host, f"python3 -c {shlex.quote(COST)} {shlex.quote(json.dumps(argv))} {runs}", timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bots", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    lab = _lab("det-bench")
    lab.up(1, ("pm2",), log=lambda _m: None)
    source = EventSource(_free_port(), secrets.token_urlsafe(24))
    source.start()
    try:
        (host,) = lab.hosts()
        base = host.bots[0]
        bots = [base] + [dict(base, name=f"bot{k}", phone=base["phone"][:-2] + f"{60 + k:02d}")
                         for k in range(1, args.bots)]
        state = json.loads(lab.state_file.read_text())
        state["hosts"][0]["bots"] = bots
        lab.state_file.write_text(json.dumps(state, indent=2))
        provision_posting_to(lab, source.port, source.secret,
                             {"waops_bots": [dict(b, service_manager="pm2") for b in bots]})
        host = lab.hosts()[0]
        n = len(bots)
        quick = cost(lab, host, ["waops-host", "check", "--quick"], args.runs)
        full = cost(lab, host, ["waops-host", "check"], args.runs)
        print(f"{n} bots on one host, {args.runs} runs each (all bots per run)")
        print(f"{'check':<28}{'wall ms/bot':>12}{'CPU ms/bot':>12}")
        for name, c in (("quick (every minute)", quick), ("full (every 5 minutes)", full)):
            print(f"{name:<28}{1000 * c['wall_s'] / n:>12.0f}{1000 * c['cpu_s'] / n:>12.0f}", flush=True)
        latencies = []
        for bot in bots:
            seconds, event = detect_once(lab, source, host, bot["name"])
            latencies.append(seconds)
            code = event["payload"]["details"].get("reported_close", {}).get("code")
            print(f"{bot['name']}: 401 -> event on the EDA source {seconds:.1f} s (reported code {code})", flush=True)
        print(f"401 -> event: median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s over "
              f"{len(latencies)} bots (the check alone: its hold of 10 min plus up to 1 min to its next run)")
    finally:
        source.stop()
        lab.down(log=lambda _m: None)


if __name__ == "__main__":
    main()
