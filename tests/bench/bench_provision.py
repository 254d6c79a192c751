"""On-demand benchmark (not collected by pytest): `python tests/bench/bench_provision.py [--hosts 1,4]`.

Wall time of playbooks/site.yml on fresh lab hosts (systemd-nspawn Debian, real SSH): the first run
(everything installed: pm2 and pm2-logrotate from the npm registry, npm ci of the sandbox bot, apt
packages) and the second run (nothing to do; must report changed=0). Hosts alternate pm2 / systemd.
Each size gets its own lab, removed afterwards. Needs root and the lab image (built on first use).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab.test_provision_support import run_site  # after the path fix above


def bench(hosts: int) -> dict:
    from waops_lab.lab import Lab, LabSettings

    base = LabSettings.from_env()
    lab = Lab(LabSettings(name=f"b-prov{hosts}", cache_dir=base.cache_dir, runtime_root=base.runtime_root))
    try:
        inventory = lab.up(hosts, ("pm2", "systemd"), log=lambda _m: None)
        first = run_site(inventory)
        second = run_site(inventory)
        return {
            "hosts": hosts,
            "first_s": round(first.seconds, 1), "first_rc": first.rc,
            "second_s": round(second.seconds, 1), "second_rc": second.rc,
            "second_changed": sum(r["changed"] for r in second.recap().values()),
        }
    finally:
        lab.down(log=lambda _m: None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,4", help="comma-separated host counts (default 1,4)")
    args = ap.parse_args()
    rows = [bench(int(n)) for n in args.hosts.split(",")]
    print(f"{'hosts':>5} {'first run':>10} {'second run':>11} {'2nd changed':>12}")
    for r in rows:
        print(f"{r['hosts']:>5} {r['first_s']:>9.1f}s {r['second_s']:>10.1f}s {r['second_changed']:>12}")
    print(json.dumps(rows))
    return 0 if all(r["first_rc"] == 0 and r["second_rc"] == 0 and r["second_changed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
