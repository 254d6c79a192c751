"""The controller's contract vocabulary in one place: the causes a diagnosis may name and the outcomes an
incident may end with. Everything else (rules, the planner, the incident store, the CLI) imports them."""

from __future__ import annotations

from typing import Literal, get_args

Cause = Literal[
    "healthy", "process_down", "crash", "library_mismatch", "client_outdated", "logged_out",
    "creds_lost", "corrupt_keys", "conflict", "network", "restart_required", "rate_limited",
    "banned", "file_bloat", "unknown",
]  # fmt: skip
CAUSES: tuple[str, ...] = get_args(Cause)

Outcome = Literal["resolved", "rolled_back", "needs_human", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
