"""The monitoring folder's files as the tests read them (the unit checks and the lab test share this)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
RULE_FILES = (MONITORING / "waops-rules.yml", MONITORING / "waops-alerts.yml")
DASHBOARD = MONITORING / "waops-dashboard.json"
# What a dashboard variable is replaced with when a query runs outside Grafana ("All").
VARIABLES = {"$instance": ".*", "$bot": ".*"}


def rules() -> list[dict[str, Any]]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expression with the variables filled in) for every query of every panel."""
    out = []
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((p["title"], expr))
    return out


def with_short_fors(text: str, duration: str) -> str:
    """The alert file with every `for:` set to DURATION (the lab cannot wait 10 minutes per alert)."""
    return re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {duration}", text)


def with_numbers(text: str, changes: dict[str, str]) -> str:
    """TEXT with each OLD replaced by NEW, where the two differ in numbers only (a lab copy's thresholds)."""
    for old, new in changes.items():
        assert re.sub(r"[\d.]+[smh]?|\s|\*", "", old) == re.sub(r"[\d.]+[smh]?|\s|\*", "", new), (old, new)
        assert text.count(old) == 1, f"{old!r} is not in the rules once"
        text = text.replace(old, new)
    return text
