"""Judge the classifier on a directory of saved logs (on demand; asserts nothing, prints a table).

    python3 tests/bench/judge_logs.py DIR [DIR ...]

Each file is named `<expected cause>--<code or none>--<anything>.log`, the naming of tests/fixtures/logs.
Use it on real logs that Baileys, Evolution API and WAHA users posted publicly, kept outside this
repository (they are other people's text): a miss there means a rule is too narrow, and the fix is a
general rule from DOMAIN.md's facts plus a fixture written from those facts, never the pasted log.
"""

from __future__ import annotations

import sys
from pathlib import Path

from waops.config import Settings
from waops.diagnose import diagnose_log
from waops.logparse import read_log


def judge(paths: list[Path]) -> int:
    settings = Settings()
    hits = 0
    files = sorted(f for p in paths for f in (p.iterdir() if p.is_dir() else [p]) if f.is_file())
    print(f"{'file':60} {'expected':18} {'got':18} {'code':>5} conf")
    for f in files:
        expected, code, *_ = [*f.name.split("--"), "", ""]
        d = diagnose_log(read_log(f, settings.log_window_bytes), settings)
        ok = d.cause == expected and (code in ("none", "") or str(d.code) == code)
        hits += ok
        mark = "" if ok else "MISS"
        print(f"{f.name[:60]:60} {expected:18} {d.cause:18} {d.code or '-':>5} {d.confidence:.2f} {mark}")
    print(f"{hits}/{len(files)} named as expected")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(judge([Path(a) for a in sys.argv[1:]]))
