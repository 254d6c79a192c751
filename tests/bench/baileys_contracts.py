"""The lab against real Baileys releases: prints release x check -> ok / ok* (an accepted difference) /
differs, then every difference with its reason. Asserts nothing (tests/contracts does).

    python3 tests/bench/baileys_contracts.py [--cache DIR] [--fetch]

Releases: tests/contracts/baileys_releases.txt; cache as tests/contracts/fetch_baileys.py (--fetch fills
it first). Exit 0 when every check is ok or accepted, 1 otherwise, 2 when the cache is incomplete.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "controller"))

from tests.contracts import baileys as bc  # noqa: E402
from tests.contracts import fetch_baileys as fb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the Baileys contract table (release x check).")
    ap.add_argument("--cache", help="cache directory (env WAOPS_BAILEYS_CACHE; default ~/.cache/waops/baileys)")
    ap.add_argument("--fetch", action="store_true", help="fill the cache first (npm registry)")
    args = ap.parse_args(argv)
    cache = fb.cache_dir(args.cache)
    pins = fb.read_pins()
    if args.fetch and fb.main([f"--cache={cache}"]) != 0:
        return 2
    if lack := fb.missing(cache, pins):
        print(f"cache {cache} lacks {', '.join(lack)}: run tests/contracts/fetch_baileys.py", file=sys.stderr)
        return 2
    checks = list(bc.CHECKS)
    width = max(len(s) for s in pins)
    print(f"{'release':{width}}  " + "  ".join(f"{c:>17}" for c in checks))
    notes: dict[tuple[str, str, str], list[str]] = {}  # (check, difference, reason or '') -> releases
    failed = False
    with tempfile.TemporaryDirectory(prefix="baileys-contracts-") as tmp:
        for spec in pins:
            rel = bc.unpack(fb.tarball_path(spec, cache), Path(tmp) / fb.tarball_name(spec), spec)
            cells = []
            for check in checks:
                res = bc.run_check(check, rel, cache)
                failed |= not res.ok
                cells.append("differs" if not res.ok else "ok*" if res.accepted else "ok")
                for d in res.differences:
                    notes.setdefault((check, d, ""), []).append(spec)
                for d, why in res.accepted:
                    notes.setdefault((check, d, why), []).append(spec)
            print(f"{spec:{width}}  " + "  ".join(f"{c:>17}" for c in cells))
    if notes:
        print("\nok* = differs in a way recorded as accepted (tests/contracts/baileys.py ACCEPTED):")
        for (check, diff, why), specs in notes.items():
            where = "every release" if len(specs) == len(pins) else ", ".join(specs)
            print(f"{check}: {'accepted' if why else 'DIFFERS'}: {diff}  [{where}]")
            if why:
                print(textwrap.fill(why, 110, initial_indent="    why: ", subsequent_indent="         "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
