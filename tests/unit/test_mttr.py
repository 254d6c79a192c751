"""MTTR math on known data, and the `waops mttr report` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from waops.cli import cli
from waops.incidents import connect
from waops.mttr import format_duration, percentile, report

T0 = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


def test_percentile_interpolates_like_numpy() -> None:
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile(values, 50) == 5.5
    assert percentile(values, 90) == pytest.approx(9.1)  # numpy.percentile(range(1, 11), 90)
    assert percentile([7], 90) == 7
    assert percentile([10, 0], 50) == 5  # unsorted input
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 101)


def _seed(store: str) -> None:
    with connect(store) as s:
        # network: repaired in 2, 4, 6, 8 and 30 minutes
        for minutes in (2, 4, 6, 8, 30):
            iid = s.open(host="lab-1", bot="shop", cause="network", code=408, started_at=T0)
            s.close(iid, "resolved", T0 + timedelta(minutes=minutes))
        # logged_out: 20 and 10 minutes, of which 15 and 5 waiting for a scan
        for minutes, wait in ((20, 15 * 60), (10, 5 * 60)):
            iid = s.open(host="lab-1", bot="shop", cause="logged_out", code=401, started_at=T0)
            s.add_human_wait(iid, wait)
            s.close(iid, "resolved", T0 + timedelta(minutes=minutes))
        # banned: needs a person, no repair time
        iid = s.open(host="lab-2", bot="news", cause="banned", code=403, started_at=T0)
        s.close(iid, "needs_human")


def test_report_per_cause(tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    _seed(db)
    with connect(db) as s:
        rows = {r.cause: r for r in report(s.list(limit=None))}
    net = rows["network"]
    assert (net.incidents, net.repaired, net.median_s) == (5, 5, 6 * 60)
    assert net.p90_s == pytest.approx((8 + 0.6 * 22) * 60)  # rank 3.6 between 8 and 30 minutes
    assert net.within_target == 4 and net.meets_target is False
    lo = rows["logged_out"]
    assert lo.median_s == 15 * 60 and lo.median_excl_human_s == 5 * 60
    assert lo.p90_excl_human_s == 5 * 60 and lo.meets_target is False
    assert lo.p90_s == pytest.approx(19 * 60)
    banned = rows["banned"]
    assert (banned.incidents, banned.repaired, banned.median_s, banned.meets_target) == (1, 0, None, None)
    total = rows["all"]
    assert total.incidents == 8 and total.repaired == 7
    assert total.median_s == 8 * 60  # 2 4 6 8 10 20 30 minutes
    assert list(rows)[-1] == "all"


def test_mttr_cli_json_on_stdout(tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    _seed(db)
    result = CliRunner().invoke(cli, ["mttr", "report", "--store", db, "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target_s"] == 900
    by_cause = {r["cause"]: r for r in doc["causes"]}
    assert by_cause["network"]["median_s"] == 360 and by_cause["network"]["meets_target"] is False


def test_mttr_cli_table_on_stderr(tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    _seed(db)
    result = CliRunner().invoke(
        cli, ["mttr", "report", "--target-min", "40"], env={"WAOPS_STORE": db, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "40-minute target" in result.stderr
    assert "network" in result.stderr and "logged_out" in result.stderr


def test_format_duration() -> None:
    assert [format_duration(x) for x in (None, 5, 65, 3700)] == ["-", "5s", "1m05s", "1h01m"]


def _prom(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the exposition format the way a scraper does (name{labels} value); comments checked apart."""
    import re

    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) waops_\w+ \S", line), line
            continue
        m = re.fullmatch(r'(waops_\w+)(?:\{(.*)\})? (\S+)', line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_report_as_prometheus_text(tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    _seed(db)
    with connect(db) as s:  # one incident still open
        s.open(host="lab-1", bot="shop", cause="network", code=408, started_at=T0)
    result = CliRunner().invoke(cli, ["mttr", "report", "--store", db, "--output", "prometheus"])
    assert result.exit_code == 0, result.output
    got = _prom(result.output)

    def v(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert v("waops_incidents", cause="network", outcome="resolved") == 5
    assert v("waops_incidents", cause="network", outcome="open") == 1
    assert v("waops_incidents", cause="banned", outcome="needs_human") == 1
    assert v("waops_incidents_repaired", cause="network") == 5
    assert v("waops_incidents_within_target", cause="network") == 4
    assert v("waops_incident_mttr_seconds", cause="network", quantile="0.5") == 6 * 60
    assert v("waops_incident_mttr_seconds", cause="network", quantile="0.9") == pytest.approx((8 + 0.6 * 22) * 60)
    assert v("waops_incident_mttr_excl_human_seconds", cause="logged_out", quantile="0.5") == 5 * 60
    assert v("waops_incident_mttr_seconds", cause="all", quantile="0.5") == 8 * 60  # 2,4,6,8,10,20,30 min
    assert v("waops_mttr_target_seconds") == 15 * 60
    assert ("waops_incidents_repaired", frozenset({("cause", "all")})) not in got  # sums stay true
    # nothing repaired: counted, never timed
    assert not [k for k in got if k[0] == "waops_incident_mttr_seconds" and ("cause", "banned") in k[1]]
    assert result.output.count("# TYPE waops_incidents gauge") == 1


def test_prometheus_text_of_an_empty_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["mttr", "report", "--store", str(tmp_path / "e.db"), "-o", "prometheus"])
    assert result.exit_code == 0
    names = {k[0] for k in _prom(result.output)}
    assert names == {"waops_mttr_report_timestamp_seconds", "waops_mttr_target_seconds"}
