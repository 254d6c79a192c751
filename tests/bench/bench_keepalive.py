"""Benchmark: how long linked devices live with and without the keep-alive agent (prints, asserts nothing).

    python3 tests/bench/bench_keepalive.py [--bots 2] [--days 30] [--speed 172800] [--hours 12]

For each hypothesis about WhatsApp's 14-day inactivity logout (does a presence update count as activity?
no maintainer says it does, docs/DOMAIN.md "Presence and expiry"), a fresh simulator links --bots sandbox bots with the
keep-alive agent (every --hours, default quiet hours 01:00-06:00 UTC) and --bots without it, runs its
accelerated clock for --days of simulated time, and prints each device's lifetime as the simulator
recorded it (GET /lifetimes), with how it ended. Nothing else talks to the bots: a quiet bot, the case
the runbook's keep-alive is meant for. Needs node and npm (the sandbox bot is installed with `npm ci`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "controller"))

from tests.sandbox.harness import BOT_SRC, Bot, Sim, bot_env, node_binary, wait_until  # noqa: E402

DAY = 86400.0


def install_bot(work: Path) -> Path:
    app = work / "bot"
    shutil.copytree(BOT_SRC, app, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
                   cwd=app, check=True, capture_output=True, timeout=300)  # fmt: skip
    return app


def run_case(app: Path, work: Path, counts: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    work.mkdir(parents=True)
    sim = Sim(work).start()
    bots: list[Bot] = []
    try:
        sim.client.configure(inactivity_days=14, presence_counts_as_activity=counts)
        phones: dict[str, bool] = {}
        for i in range(args.bots * 2):
            keepalive = i % 2 == 0
            phone = f"155502{int(counts)}{i:04d}"
            phones[phone] = keepalive
            name = f"b{i}"
            env = bot_env(sim.url, phone, name, work, WAOPS_CONNECT_TIMEOUT_MS="2000",
                          WAOPS_KEEPALIVE_HOURS=str(args.hours if keepalive else 0), WAOPS_QUIET_HOURS="01:00-06:00",
                          WAOPS_TZ="UTC", WAOPS_KEEPALIVE_TICK_MS="50",
                          WAOPS_BACKUP_CMD="off")  # the backup is not what is measured here
            bots.append(Bot(app, work, name, env).start())
        for bot in bots:
            bot.wait_for("opened connection to WA", timeout=30)
        start = sim.client.clock()["now"]
        real0 = time.monotonic()
        sim.client.set_clock_speed(args.speed)
        wait_until(lambda: sim.client.clock()["now"] >= start + args.days * DAY, args.days * DAY / args.speed * 3 + 30,
                   interval=0.1, what="the simulated horizon")  # fmt: skip
        sim.client.set_clock_speed(1)
        real = time.monotonic() - real0
        rows = []
        for r in sim.client.lifetimes():
            if r["phone"] in phones:
                rows.append({**r, "with_keepalive": phones[r["phone"]], "horizon_s": args.days * DAY,
                             "start": start, "real_s": real})  # fmt: skip
        return rows
    finally:
        for bot in bots:
            bot.stop()
        sim.stop()


def report(counts: bool, rows: list[dict[str, Any]], days: float) -> None:
    print(f"\npresence counts as activity: {'yes' if counts else 'no'}   (simulated {days:g} days in "
          f"{rows[0]['real_s']:.1f} s real)")  # fmt: skip
    print(f"  {'keep-alive':<11} {'device':<32} {'lifetime (days)':>16} {'keep-alives':>12}  ended")
    for r in sorted(rows, key=lambda r: (not r["with_keepalive"], r["device"])):
        life = (r["end"] if r["ended"] else r["start"] + r["horizon_s"]) - r["linked_at"]
        ended = r["reason"] if r["ended"] else f"still linked at the horizon (>= {life / DAY:.1f} d)"
        print(f"  {'yes' if r['with_keepalive'] else 'no':<11} {r['device']:<32} {life / DAY:>16.2f} "
              f"{r['presences']:>12}  {ended}")  # fmt: skip
    for flag in (True, False):
        lives = [
            ((r["end"] if r["ended"] else r["start"] + r["horizon_s"]) - r["linked_at"]) / DAY
            for r in rows
            if r["with_keepalive"] is flag
        ]
        ended = sum(1 for r in rows if r["with_keepalive"] is flag and r["ended"])
        print(f"  -> {'with' if flag else 'without'} keep-alive: median lifetime {statistics.median(lives):.2f} d, "
              f"{ended}/{len(lives)} logged out within {days:g} d")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=2, help="bots per arm (with / without keep-alive)")
    parser.add_argument("--days", type=float, default=30.0, help="simulated days")
    parser.add_argument("--speed", type=float, default=172800.0, help="simulated seconds per real second")
    parser.add_argument("--hours", type=float, default=12.0, help="keep-alive interval")
    args = parser.parse_args()
    if not node_binary() or not shutil.which("npm"):
        print("node and npm are required", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="waops-bench-keepalive-") as tmp:
        work = Path(tmp)
        app = install_bot(work)
        print(f"keep-alive every {args.hours:g} h (quiet 01:00-06:00 UTC), 14-day inactivity logout, "
              f"{args.bots} bots per arm, no messages")  # fmt: skip
        for counts in (True, False):
            report(counts, run_case(app, work / f"case-{int(counts)}", counts, args), args.days)
    print("\nThe keep-alive keeps a quiet device linked only if WhatsApp counts presence as activity, which no"
          "\nmaintainer has confirmed; otherwise it changes nothing. Measure it on real devices with the health"
          "\nfile (last_keepalive_at, session_started_at) and the 401s it logs.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
