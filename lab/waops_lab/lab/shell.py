"""Running commands on the machine that hosts the lab (root)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from waops_lab.errors import LabError


def run(cmd: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 600,
        capture: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(cmd), input=input, text=True, timeout=timeout,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed (run `waops lab deps` or .ci/run)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise LabError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {' | '.join(detail)}")
    return proc


def ok(cmd: Sequence[str]) -> bool:
    try:
        return subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
