"""The monitoring content ops teams load (monitoring/): promtool checks the rules and runs their unit
tests, every alert fires and clears in those tests, every runbook link lands on a README heading, and
every expression (rules and dashboard) names metrics that waops really writes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.monitoring_files import (
    DASHBOARD,
    MONITORING,
    RULE_FILES,
    alerts,
    panel_queries,
    rules,
    with_numbers,
    with_short_fors,
)

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=MONITORING)


def _written_metrics() -> set[str]:
    """Metric names the host check and the controller's MTTR export write (their own tables)."""
    from waops.mttr_metrics import METRICS
    from waops_host import metrics

    return set(metrics.METRICS) | set(METRICS)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    proc = _promtool("check", "rules", *map(str, RULE_FILES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_FILES)


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    tests = sorted((MONITORING / "tests").glob("*.yml"))
    assert tests
    proc = _promtool("test", "rules", *map(str, tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against alerts that fire at once (every `for:` 0s) fail: they measure the delays."""
    (tmp_path / "waops-alerts.yml").write_text(with_short_fors((MONITORING / "waops-alerts.yml").read_text(), "0s"))
    shutil.copy(MONITORING / "waops-rules.yml", tmp_path)
    doc = yaml.safe_load((MONITORING / "tests" / "waops.test.yml").read_text())
    (tmp_path / "t.yml").write_text(yaml.safe_dump(dict(doc, rule_files=["waops-rules.yml", "waops-alerts.yml"])))
    assert PROMTOOL
    proc = subprocess.run([PROMTOOL, "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "WaopsSessionDown" in proc.stdout + proc.stderr


def test_every_alert_fires_does_not_fire_and_clears_in_the_unit_tests() -> None:
    doc = yaml.safe_load((MONITORING / "tests" / "waops.test.yml").read_text())
    seen: dict[str, list[tuple[int, bool]]] = {}
    for t in doc["tests"]:
        for case in t.get("alert_rule_test", []):
            minutes = _minutes(case["eval_time"])
            seen.setdefault(case["alertname"], []).append((minutes, bool(case.get("exp_alerts"))))
    for a in alerts():
        cases = sorted(seen.get(a["alert"], []))
        fired = [m for m, firing in cases if firing]
        assert fired, f"{a['alert']}: never seen firing"
        assert any(not firing and m < fired[0] for m, firing in cases), f"{a['alert']}: no case before it fires"
        assert any(not firing and m > fired[0] for m, firing in cases), f"{a['alert']}: never seen clearing"


def _minutes(text: str) -> int:
    n, unit = int(text[:-1]), text[-1]
    return n * {"m": 1, "h": 60}[unit]


def _readme_anchors() -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_alerts_carry_severity_and_a_runbook_in_the_readme() -> None:
    anchors = _readme_anchors()
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for a in alerts():
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        anchor = a["annotations"]["runbook_url"].partition("README.md#")[2]
        assert anchor in anchors, f"{a['alert']}: no README heading for #{anchor}"


def test_expressions_name_real_metrics_and_recorded_series() -> None:
    written = _written_metrics()
    recorded = {r["record"] for r in rules() if "record" in r}
    exprs = [("rule " + (r.get("alert") or r["record"]), r["expr"]) for r in rules()] + panel_queries()
    for where, expr in exprs:
        body = re.sub(r'"[^"]*"', '""', expr)  # label values are not names
        for name in re.findall(r"\b\w+:\w+(?::\w+)?\b", body):
            assert name in recorded, f"{where}: {name} is not recorded in waops-rules.yml"
        body = re.sub(r"\b\w+:\w+(?::\w+)?\b", "", body)
        for name in re.findall(r"\bwaops_\w+", body):
            assert name in written, f"{where}: {name} is written by nobody"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = panel_queries()
    assert len({title for title, _ in queries}) >= 15
    doc = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                       for i, (_, e) in enumerate(queries)]}]}  # fmt: skip
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump(doc))
    proc = _promtool("check", "rules", str(f))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_variables_are_the_ones_filled_in() -> None:
    import json

    text = DASHBOARD.read_text()
    names = {v["name"] for v in json.loads(text)["templating"]["list"]}
    assert names == {"datasource", "instance", "bot"}
    used = set(re.findall(r"\$(\w+)", "".join(e for _, e in panel_queries())))
    assert not used, f"variables left unfilled: {used}"


def test_lab_copies_rewrite_numbers_only() -> None:
    """The lab test shortens hour thresholds with with_numbers: anything but a number change is refused."""
    text = (MONITORING / "waops-alerts.yml").read_text()
    short = with_numbers(text, {"waops:check_age_seconds > 20 * 60": "waops:check_age_seconds > 20"})
    assert "waops:check_age_seconds > 20\n" in short and short.count("\n") == text.count("\n")
    with pytest.raises(AssertionError):
        with_numbers(text, {"waops:check_age_seconds > 20 * 60": "waops:check_age_seconds < 20"})
    with pytest.raises(AssertionError):  # "7 * 3600" is in two rules: the change must say which
        with_numbers(text, {"7 * 3600": "40"})
