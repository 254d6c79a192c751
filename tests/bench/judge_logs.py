"""Judge the classifier on a directory of saved logs (on demand; asserts nothing, prints figures).

    python3 tests/bench/judge_logs.py DIR [DIR ...] [--quiet] [--part NAME]

Each file is named `<expected cause>--<code or none>--<format>--<slug>.log` (tests/fixtures/logs uses the
same first two fields). A file counts as exact when the cause matches and, where the name gives a code,
the code matches too. Printed: one line per file (unless --quiet), exact-cause accuracy, the `unknown`
rate, accuracy per cause and per format, and a confusion matrix (expected rows, named columns).

Use it on real logs that Baileys, Evolution API and WAHA users posted publicly, kept outside this
repository (they are other people's text; docs/judge-set.md says how the set is built): a miss there
means the reader or a rule is too narrow, and the fix is a general one plus a fixture written by us.
A SPLIT.tsv beside the excerpts (file, part) adds the figures per part (dev, held-out); --part NAME
judges only the files of that part, so every table below is that part's. The list of the
set (file, thread, label, reason, part) is tests/bench/judge_sources.tsv; files not in it are named.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from waops.config import Settings
from waops.diagnose import diagnose_log
from waops.logparse import read_log
from waops.model import CAUSES

# A file's format tag names what wraps and shapes its lines; its family is the first that matches.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("legacy WAConnection", ("legacy",)),
    ("evolution / WAHA", ("evolution", "docker-t-evolution", "docker-compose", "n8n", "waha")),
    ("pm2", ("pm2",)),
    ("heroku/syslog/journald", ("heroku", "syslog", "journald", "s6")),
    ("docker -t / epoch column", ("docker", "epoch", "custom-time", "bracket-iso", "bracket-time")),
    ("pino-pretty", ("pino-pretty", "pretty")),
    ("pino JSON", ("pino", "json", "node-json", "api-json", "newrelic", "prisma")),
    ("logfmt", ("logfmt",)),
    ("emoji / bot text", ("emoji", "bot-", "logger-adapter", "title", "prose", "markdown")),
    ("console.log objects", ("console",)),
    ("node fatal (caret, OOM)", ("caret", "v8-oom", "npm", "tsx")),
    ("stack traces", ("stack", "windows", "termux", "wrapped", "mobile", "replit", "unhandled", "ts-node", "plain")),
)


def family(fmt: str) -> str:
    return next((name for name, prefixes in FAMILIES if fmt.startswith(prefixes)), "other")


def _fields(name: str) -> tuple[str, str, str]:
    parts = name.removesuffix(".log").split("--")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1] or "none", parts[2] if len(parts) > 3 else "-"


SOURCES = Path(__file__).resolve().parent / "judge_sources.tsv"


def _listed() -> set[str]:
    return {row.split("\t", 1)[0] for row in SOURCES.read_text().splitlines()[1:]} if SOURCES.is_file() else set()


def _splits(paths: list[Path]) -> dict[str, str]:
    """file name -> part (dev, held-out) from a SPLIT.tsv beside the excerpts, when there is one."""
    out: dict[str, str] = {}
    for p in paths:
        tsv = (p if p.is_dir() else p.parent) / "SPLIT.tsv"
        if tsv.is_file():
            for row in tsv.read_text().splitlines()[1:]:
                name, _, part = row.partition("\t")
                out[name] = part.strip()
    return out


def judge(paths: list[Path], quiet: bool = False, part: str | None = None) -> int:
    settings = Settings()
    files = sorted(f for p in paths for f in (p.iterdir() if p.is_dir() else [p])
                   if f.is_file() and f.name.endswith(".log"))
    split = _splits(paths)
    if part is not None:
        files = [f for f in files if split.get(f.name) == part]
    listed = _listed()
    unlisted = [f.name for f in files if listed and f.name not in listed]
    if unlisted:
        print(f"{len(unlisted)} excerpt(s) not in {SOURCES.name}, e.g. {unlisted[0]}", file=sys.stderr)
    if not files:
        print("no <cause>--<code>--<format>--<slug>.log file found", file=sys.stderr)
        return 2
    hits = 0
    unknown = 0
    confusion: Counter[tuple[str, str]] = Counter()
    by_cause: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_format: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_family: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_split: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if not quiet:
        print(f"{'file':64} {'expected':17} {'got':17} {'code':>5} conf")
    for f in files:
        expected, code, fmt = _fields(f.name)
        d = diagnose_log(read_log(f, settings.log_window_bytes), settings)
        ok = d.cause == expected and (code == "none" or str(d.code) == code)
        hits += ok
        unknown += d.cause == "unknown"
        confusion[(expected, d.cause)] += 1
        keys = [(by_cause, expected), (by_format, fmt), (by_family, family(fmt))]
        if f.name in split:
            keys.append((by_split, split[f.name]))
        for table, key in keys:
            table[key][0] += ok
            table[key][1] += 1
        if not quiet:
            mark = "" if ok else "MISS"
            print(f"{f.name[:64]:64} {expected:17} {d.cause:17} {d.code or '-':>5} {d.confidence:.2f} {mark}")
    n = len(files)
    print(f"\n{n} excerpts: exact cause {hits}/{n} = {100 * hits / n:.1f}%, unknown {unknown}/{n} = "
          f"{100 * unknown / n:.1f}%")
    for title, table in (("split", by_split), ("cause", by_cause), ("format family", by_family),
                         ("format", by_format)):
        if not table:
            continue
        print(f"\nper {title}:")
        for key in sorted(table):
            ok, tot = table[key]
            print(f"  {key:28} {ok:3}/{tot:<3} {100 * ok / tot:5.1f}%")
    rows = [c for c in CAUSES if any(confusion[(c, g)] for g in CAUSES)]
    cols = [c for c in CAUSES if any(confusion[(e, c)] for e in CAUSES)]
    print("\nconfusion (rows expected, columns named):")
    print(" " * 18 + "".join(f"{c[:7]:>8}" for c in cols))
    for r in rows:
        print(f"{r:18}" + "".join(f"{confusion[(r, c)] or '.':>8}" for c in cols))
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the report quietly
    argv = sys.argv[1:]
    part = None
    if "--part" in argv:
        i = argv.index("--part")
        part = argv[i + 1] if i + 1 < len(argv) else sys.exit("--part needs a name (dev, held-out, ...)")
        del argv[i:i + 2]
    args = [a for a in argv if a != "--quiet"]
    if not args:
        sys.exit(__doc__)
    sys.exit(judge([Path(a) for a in args], quiet="--quiet" in argv, part=part))
