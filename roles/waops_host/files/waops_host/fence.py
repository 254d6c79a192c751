"""The fence of a bot that moved to another host: stop it here for good, and the start gate."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from .base import AgentError, iso, log, now_utc, read_small_json, write_json_file
from .offhost import offhost_owner
from .process import run_quiet
from .restic import host_id, offhost_config

if TYPE_CHECKING:
    from .config import BotConfig


EXIT_FENCED = 3  # `gate`: the bot must not start here (anything else lets it start: the gate never blocks by failing)


def fence_path(cfg: BotConfig) -> str:
    return os.path.join(os.path.dirname(cfg.path), f"{cfg.name}.fence")  # not *.json: no bot config


def read_fence(cfg: BotConfig) -> dict[str, Any] | None:
    try:
        doc = read_small_json(fence_path(cfg))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"error": "unreadable fence marker"}  # present: fenced all the same
    return doc if isinstance(doc, dict) else {"error": "bad fence marker"}


def service_units(cfg: BotConfig) -> list[str]:
    """The units that bring the bot up at boot: its own (systemd) or its user's pm2 daemon."""
    if cfg.service_manager == "systemd":
        name = cfg.service_name
        return [name if name.endswith(".service") else f"{name}.service"]
    return [f"pm2-{cfg.user}.service"]


def systemctl(*args: str, timeout: float = 60) -> str | None:
    """None when it worked, else why (no systemd here, a unit missing)."""
    p = run_quiet(["systemctl", *args], timeout=timeout)
    if p is None:
        return "systemctl unavailable"
    if p.returncode != 0:
        return p.stderr.decode("utf-8", "replace").strip()[:300] or f"exit {p.returncode}"
    return None


def do_fence(cfg: BotConfig, owner: str | None, why: str, stop: bool = True) -> dict[str, Any]:
    """Marker first (a crash between the steps still leaves the bot fenced), then stop, disable, mask."""
    marker = {"bot": cfg.name, "fenced_at": iso(now_utc()), "host": host_id(cfg), "owner": owner, "why": why}
    write_json_file(fence_path(cfg), marker)
    errors = []
    for unit in service_units(cfg):
        # --no-block: the gate runs inside the unit's own start job; waiting for its stop would deadlock
        for args in ((["stop", "--no-block", unit]) if stop else []), ["disable", unit], ["mask", unit]:
            if args and (err := systemctl(*args)):
                if args[0] == "mask" and "already exists" in err:
                    continue  # a unit file in /etc/systemd/system cannot be masked; its fence condition
                    # (ConditionPathExists=!<marker>, set by the waops_service role) keeps it from starting
                errors.append(f"systemctl {' '.join(args)}: {err}")
    return {"bot": cfg.name, "ok": True, "fenced": True, "marker": fence_path(cfg), "owner": owner,
            "units": service_units(cfg), "errors": errors}


def do_unfence(cfg: BotConfig, start: bool) -> dict[str, Any]:
    errors = []
    with contextlib.suppress(FileNotFoundError):  # first: the units' fence condition skips a start while it exists
        os.unlink(fence_path(cfg))
    for unit in service_units(cfg):
        for args in (["unmask", unit], ["enable", unit], *([["start", unit]] if start else [])):
            if err := systemctl(*args):
                errors.append(f"systemctl {' '.join(args)}: {err}")
    return {"bot": cfg.name, "ok": not (start and errors), "fenced": False, "errors": errors}


def gate(cfg: BotConfig) -> dict[str, Any]:
    """May the bot start on this host? No when fenced, or when its repository names another owner
    (then fence now). An unreachable repository does not keep a bot down: it is logged and allowed."""
    marker = read_fence(cfg)
    if marker is not None:
        return {"bot": cfg.name, "ok": False, "allowed": False, "exit_code": EXIT_FENCED,
                "why": f"fenced: moved to {marker.get('owner')}"}
    try:
        oc = offhost_config(cfg)
        if oc is None:
            return {"bot": cfg.name, "ok": True, "allowed": True, "why": "no repository to ask"}
        owner = offhost_owner(cfg, oc, timeout=30)
    except AgentError as e:
        log(f"{cfg.name}: owner unknown ({e}); starting")
        return {"bot": cfg.name, "ok": True, "allowed": True, "why": f"owner unknown: {e}"}
    if owner is None or owner == host_id(cfg):
        return {"bot": cfg.name, "ok": True, "allowed": True, "owner": owner, "why": "this host owns the bot"}
    do_fence(cfg, owner, "the repository names another owner", stop=False)
    log(f"{cfg.name}: moved to {owner}: fenced here, not starting")
    return {"bot": cfg.name, "ok": False, "allowed": False, "owner": owner, "exit_code": EXIT_FENCED,
            "why": f"moved to {owner}"}


def fence_facts(cfg: BotConfig) -> dict[str, Any] | None:
    return read_fence(cfg)
