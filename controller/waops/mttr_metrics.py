"""The incident store's figures as Prometheus text (`waops mttr report --output prometheus`).

Written for node_exporter's textfile collector on the controller (or any machine that reaches the store),
so the dashboard can show incidents and MTTR per cause beside the hosts' own metrics. Gauges over the
report's window (`--since`), not counters: a store is pruned and a window moves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from waops.mttr import CauseStats

# name -> (type, help); the order is the output's.
METRICS: dict[str, tuple[str, str]] = {
    "waops_mttr_report_timestamp_seconds": ("gauge", "When the report was made (unix time)."),
    "waops_mttr_target_seconds": ("gauge", "The MTTR target the report measures against."),
    "waops_incidents": ("gauge", "Incidents in the report's window by cause and outcome (open: not closed yet)."),
    "waops_incidents_repaired": ("gauge", "Incidents of the cause whose bot works again (resolved or rolled back)."),
    "waops_incidents_within_target": ("gauge", "Repaired incidents of the cause repaired within the target."),
    "waops_incident_mttr_seconds": ("gauge", "MTTR quantile per cause (cause=\"all\": every cause together)."),
    "waops_incident_mttr_excl_human_seconds": ("gauge", "MTTR quantile per cause, without time waiting for a person."),
}
QUANTILES = (("0.5", "median"), ("0.9", "p90"))


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def samples(incidents: Iterable[Any], rows: Sequence[CauseStats], target_s: float,
            now: datetime) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample; quantiles only where something was repaired."""
    out: list[tuple[str, dict[str, str], float]] = [
        ("waops_mttr_report_timestamp_seconds", {}, round(now.timestamp(), 3)),
        ("waops_mttr_target_seconds", {}, target_s),
    ]
    counts = Counter((i.cause, i.outcome or "open") for i in incidents)
    out += [("waops_incidents", {"cause": c, "outcome": o}, n) for (c, o), n in sorted(counts.items())]
    for r in rows:
        if r.cause != "all":  # per-cause counts add up; an "all" row would count twice in a sum
            out.append(("waops_incidents_repaired", {"cause": r.cause}, r.repaired))
            out.append(("waops_incidents_within_target", {"cause": r.cause}, r.within_target))
        for q, attr in QUANTILES:
            for name, value in (("waops_incident_mttr_seconds", getattr(r, f"{attr}_s")),
                                ("waops_incident_mttr_excl_human_seconds", getattr(r, f"{attr}_excl_human_s"))):
                if value is not None:
                    out.append((name, {"cause": r.cause, "quantile": q}, value))
    return out


def render(incidents: Iterable[Any], rows: Sequence[CauseStats], target_s: float, now: datetime) -> str:
    """Prometheus text exposition format: each family's HELP and TYPE once, then its samples."""
    got = samples(incidents, rows, target_s, now)
    lines: list[str] = []
    for name, (kind, help_text) in METRICS.items():
        family = [s for s in got if s[0] == name]
        if not family:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for _, labels, value in family:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {_number(value)}" if lab else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"
