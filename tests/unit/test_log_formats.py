"""Every cause a log can show, in every log format: the same diagnosis whatever wraps the lines.

Coverage (rows: causes, columns: formats; every cell is a file in tests/fixtures/logs/formats/):

| cause | pino | pino-pretty | console | logfmt | journald | pm2 | docker | ansi-crlf | markdown-quote | heroku |
|---|---|---|---|---|---|---|---|---|---|---|
| healthy | x | x | x | x | x | x | x | x | x | x |
| logged_out | x | x | x | x | x | x | x | x | x | x |
| conflict | x | x | x | x | x | x | x | x | x | x |
| restart_required | x | x | x | x | x | x | x | x | x | x |
| network | x | x | x | x | x | x | x | x | x | x |
| client_outdated | x | x | x | x | x | x | x | x | x | x |
| banned | x | x | x | x | x | x | x | x | x | x |
| rate_limited | x | x | x | x | x | x | x | x | x | x |
| corrupt_keys | x | x | x | x | x | x | x | x | x | x |
| crash | x | x | x | x | x | x | x | x | x | x |
| library_mismatch | x | x | x | x | x | x | x | x | x | x |
| creds_lost | x | x | x | x | x | x | x | x | x | x |

process_down and file_bloat are facts only (process state, folder size): no log line shows them.
The table is checked against tests.logformats, so it cannot drift from the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.logformats import FORMATS, SCRIPTS, path, render

from waops.diagnose import diagnose_log
from waops.logparse import read_log
from waops.model import CAUSES

CELLS = [(c, f) for c in SCRIPTS for f in FORMATS]


def _table() -> tuple[list[str], list[str]]:
    rows = [line for line in (__doc__ or "").splitlines() if line.startswith("|")]
    head = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    causes = [r.strip("|").split("|")[0].strip() for r in rows[2:]]
    assert all(set(re.findall(r"\S", "".join(r.strip("|").split("|")[1:]))) == {"x"} for r in rows[2:])
    return head, causes


def test_coverage_table_is_every_cause_in_every_format() -> None:
    head, causes = _table()
    assert head == list(FORMATS)
    assert causes == list(SCRIPTS)
    assert set(CAUSES) - set(SCRIPTS) == {"process_down", "file_bloat", "unknown"}


@pytest.mark.parametrize(("cause", "fmt"), CELLS, ids=[f"{c}-{f}" for c, f in CELLS])
def test_fixture_in_every_format_is_diagnosed(cause: str, fmt: str) -> None:
    p: Path = path(cause, fmt)
    assert p.read_bytes() == render(cause, fmt).encode(), "stale fixture: python3 -m tests.logformats --write"
    d = diagnose_log(read_log(p))
    code = SCRIPTS[cause][0]
    assert (d.cause, d.code if code is not None else None) == (cause, code), (d.rule, d.evidence)
    assert d.cause == "healthy" or d.confidence >= 0.5, "a whole script of evidence is not a guess"
