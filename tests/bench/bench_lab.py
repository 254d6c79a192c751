"""On-demand benchmark (not collected by pytest): `python tests/bench/bench_lab.py [--skip-build]`.

Prints (targets: under 3 s per host once the image exists, 8 hosts under 10 s):
- image build time: a forced rebuild of the lab image (debootstrap + Node.js from the npm registry) into a
  temporary cache directory, so the real cache (/var/cache/waops-lab, WAOPS_LAB_CACHE) is never touched.
  `--warm-debs` hard-links the real cache's downloaded .debs first (a rebuild after a recipe change);
  without it the build downloads everything (a fresh machine). A second `ensure` must cost nothing.
- boot time per host: `Lab.up(1)` on a lab that does not exist yet (bridge, PostgreSQL initdb, simulator
  and one host), and one host added to a running lab; each is the wall time until the host answers
  `systemctl is-system-running` over SSH with strict host-key checking.
- boot time for 8 hosts at once: `Lab.up(8)` on a new lab, wall time until all 8 answer.
Each figure is the median of --rounds runs (lab `bench`, removed after each run). Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_build(warm_debs: bool) -> None:
    from waops_lab.lab import LabSettings
    from waops_lab.lab.image import Image

    real = LabSettings.from_env().cache_dir
    tmp = Path(tempfile.mkdtemp(prefix="waops-bench-image-", dir="/var/tmp"))
    try:
        if warm_debs and (real / "debs").is_dir():
            subprocess.run(["cp", "-al", str(real / "debs"), str(tmp / "debs")], check=True)
        image = Image(tmp)
        start = time.perf_counter()
        spent = image.ensure(log=lambda m: print(f"  {m}"))
        took = time.perf_counter() - start
        size = subprocess.run(["du", "-sm", str(image.rootfs)], capture_output=True, text=True).stdout.split()[0]
        again = Image(tmp).ensure(log=print)
        print(
            f"image build ({'warm' if warm_debs else 'cold'} .deb cache): {took:.1f} s "
            f"(build {spent:.1f} s, rootfs {size} MiB); ensure again with the same recipe: {again:.3f} s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _lab():
    from waops_lab.lab import Lab, LabSettings

    base = LabSettings.from_env()
    return Lab(LabSettings(name="bench", cache_dir=base.cache_dir, runtime_root=base.runtime_root))


def bench_boot(count: int) -> dict[str, float]:
    lab = _lab()
    lab.down(log=lambda _m: None)
    try:
        start = time.perf_counter()
        lab.up(count, log=lambda _m: None)
        cold = time.perf_counter() - start
        per_host = max(lab.last_boot["total_s"], 0.0)
        prepare = lab.last_boot["prepare_s"]
        added = 0.0
        if count == 1:
            start = time.perf_counter()
            lab.up(1, log=lambda _m: None)  # PostgreSQL and the simulator already run
            added = time.perf_counter() - start
        return {"cold_s": cold, "hosts_s": per_host, "prepare_s": prepare, "added_s": added}
    finally:
        lab.down(log=lambda _m: None)
        left = lab.leftovers()
        if left:
            print(f"  LEFT BEHIND: {left}")


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-build", action="store_true", help="skip the forced image rebuild (minutes)")
    ap.add_argument("--warm-debs", action="store_true", help="reuse the real cache's .debs for the rebuild")
    ap.add_argument("--skip-boot", action="store_true", help="only the image build")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("the lab needs root", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared)")
    if not args.skip_build:
        bench_build(args.warm_debs)
    if args.skip_boot:
        return 0
    _lab().image.ensure(log=print)  # the boot figures are "once the image exists"
    one = [bench_boot(1) for _ in range(args.rounds)]
    eight = [bench_boot(8) for _ in range(args.rounds)]
    print(
        f"1 host, new lab (bridge + PostgreSQL initdb + simulator + host), median of {args.rounds}: "
        f"{_median(one, 'cold_s'):.2f} s; the host itself: {_median(one, 'hosts_s'):.2f} s "
        f"(prepare {_median(one, 'prepare_s'):.2f} s)  [target < 3 s]"
    )
    print(f"1 host added to a running lab, median of {args.rounds}: {_median(one, 'added_s'):.2f} s  [target < 3 s]")
    print(
        f"8 hosts at once, new lab, median of {args.rounds}: {_median(eight, 'cold_s'):.2f} s; "
        f"the hosts themselves: {_median(eight, 'hosts_s'):.2f} s (prepare {_median(eight, 'prepare_s'):.2f} s)"
        f"  [target < 10 s]"
    )
    print(
        "runs: "
        + "; ".join(f"1:{r['cold_s']:.2f}/{r['added_s']:.2f}" for r in one)
        + "; "
        + "; ".join(f"8:{r['cold_s']:.2f}" for r in eight)
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
