"""MTTR report: median and p90 of resolved_at - started_at per cause, against the 15-minute target.

Pure functions over incidents: only incidents where the bot works again (resolved, rolled_back) have a
repair time; the others are counted, not timed. Percentiles interpolate linearly between the two
nearest ranks (numpy's default), so p90 of ten values is not simply the ninth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

TARGET_S = 15 * 60


class Timed(Protocol):
    cause: str
    outcome: str | None

    @property
    def mttr_s(self) -> float | None: ...

    @property
    def mttr_excl_human_s(self) -> float | None: ...


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError("percentile must be within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class CauseStats:
    cause: str  # "all" for the total row
    incidents: int  # every incident of this cause, open or closed
    repaired: int  # the ones with a repair time
    median_s: float | None
    p90_s: float | None
    median_excl_human_s: float | None
    p90_excl_human_s: float | None
    within_target: int  # repaired within the target
    target_s: float

    @property
    def meets_target(self) -> bool | None:
        """p90 within the target; None when nothing was repaired."""
        return None if self.p90_s is None else self.p90_s <= self.target_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause, "incidents": self.incidents, "repaired": self.repaired,
            "median_s": self.median_s, "p90_s": self.p90_s,
            "median_excl_human_s": self.median_excl_human_s, "p90_excl_human_s": self.p90_excl_human_s,
            "within_target": self.within_target, "target_s": self.target_s, "meets_target": self.meets_target,
        }  # fmt: skip


def _stats(cause: str, incidents: Sequence[Timed], target_s: float) -> CauseStats:
    times = [t for t in (i.mttr_s for i in incidents) if t is not None]
    net = [t for t in (i.mttr_excl_human_s for i in incidents) if t is not None]
    return CauseStats(
        cause=cause,
        incidents=len(incidents),
        repaired=len(times),
        median_s=percentile(times, 50),
        p90_s=percentile(times, 90),
        median_excl_human_s=percentile(net, 50),
        p90_excl_human_s=percentile(net, 90),
        within_target=sum(1 for t in times if t <= target_s),
        target_s=target_s,
    )


def report(incidents: Iterable[Timed], target_s: float = TARGET_S) -> list[CauseStats]:
    """One row per cause (sorted by name), then an "all" row."""
    items = list(incidents)
    by_cause: dict[str, list[Timed]] = {}
    for i in items:
        by_cause.setdefault(i.cause, []).append(i)
    rows = [_stats(cause, group, target_s) for cause, group in sorted(by_cause.items())]
    rows.append(_stats("all", items, target_s))
    return rows


def format_duration(seconds: float | None) -> str:
    """`4m05s`, `1h02m`, `-` for none: short enough for a table column."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
