"""Settings: flags > WAOPS_* environment > waops.toml > defaults, and where each value came from.

waops.toml is read from ~/.config/waops/waops.toml (`$XDG_CONFIG_HOME/waops/waops.toml`), then from
./waops.toml in the current directory (the project's file wins), or only from the file named by
WAOPS_CONFIG. Keys are the field names below (`inventory = "inventories/prod"`, `timeout = 20`, ...), at
the top level or under `[waops]`. There is no default inventory: see require_inventory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from waops.errors import UsageError


@dataclass
class Settings:
    inventory: str = ""  # Ansible inventory (file or directory); no default: see require_inventory
    output: str = "table"  # table | json
    concurrency: int = 16  # hosts probed at once (a probe mostly waits on SSH and the host; as ansible.cfg forks)
    timeout: float = 30.0  # hard deadline per host, seconds (connect + probe)
    log_window_bytes: int = 262_144  # bytes read from the end of a log file
    health_fresh_s: int = 600  # a health file older than this is stale
    bad_mac_flood: int = 10  # Bad MAC lines in one session that make a flood
    # Auth folder size (runbook: 200 warning, 300 emergency), per store; v7 adds its pre-key upload.
    files_warning: int = 200
    files_emergency: int = 300
    db_rows_warning: int = 200
    db_rows_emergency: int = 300
    origin: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def explain(self) -> list[tuple[str, Any, str]]:
        """(name, value, source) for every setting; source is `flag`, `env WAOPS_X`, a file path or
        `default`."""
        return [(n, getattr(self, n), self.origin.get(n, "default")) for n in names()]

    def to_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names()}


NO_INVENTORY = ("no inventory given: pass -i/--inventory, set WAOPS_INVENTORY, or put `inventory = \"PATH\"` "
                "in waops.toml (./waops.toml or ~/.config/waops/waops.toml)")


def require_inventory(s: Settings, env: Mapping[str, str] | None = None) -> str:
    """The inventory to act on. Never a built-in default: a forgotten flag must not point at the lab.
    Without one, a UsageError (exit 2) names every place that was looked in."""
    if s.inventory:
        return s.inventory
    env = os.environ if env is None else env
    files = []
    for path in config_candidates(env):
        files.append(f"{path}: {'no inventory key' if path.is_file() else 'no such file'}")
    raise UsageError("no inventory: looked at -i/--inventory (not given), WAOPS_INVENTORY (not set) and "
                     "`inventory = \"PATH\"` in waops.toml (" + "; ".join(files) + "); give one of them, "
                     "there is no default")


def config_candidates(env: Mapping[str, str]) -> list[Path]:
    """Every waops.toml looked for, in the order read (a later file wins): WAOPS_CONFIG alone when set,
    else $XDG_CONFIG_HOME/waops/waops.toml (default ~/.config/waops/waops.toml), then ./waops.toml."""
    if env.get("WAOPS_CONFIG"):
        return [Path(env["WAOPS_CONFIG"])]
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [xdg / "waops" / "waops.toml", Path.cwd() / "waops.toml"]


def names() -> list[str]:
    return [f.name for f in fields(Settings) if f.name != "origin"]


def config_files(env: Mapping[str, str]) -> list[Path]:
    if env.get("WAOPS_CONFIG"):
        return [Path(env["WAOPS_CONFIG"])]  # named: must exist (read reports it missing)
    return [p for p in config_candidates(env) if p.is_file()]


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings. `flags` holds command-line values; None means "not given"."""
    env = os.environ if env is None else env
    s = Settings()
    for path in config_files(env):
        for key, value in _read_toml(path).items():
            if key == "inventory" and isinstance(value, str) and value:
                # relative to the file that names it, not to wherever waops happens to run
                value = str(path.parent / Path(value).expanduser())
            _set(s, key, value, str(path))
    for name in names():
        raw = env.get(f"WAOPS_{name.upper()}")
        if raw is not None and raw != "":
            _set(s, name, raw, f"env WAOPS_{name.upper()}")
    for name, value in (flags or {}).items():
        if value is not None and name in names():
            _set(s, name, value, "flag")
    if s.output not in ("table", "json"):
        raise UsageError(f"output must be table or json, not {s.output!r} ({s.origin.get('output')})")
    return s


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a config file: not every command's start pays for it

    from waops.files import read_small

    try:
        doc = tomllib.loads(read_small(path, "config file").decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    table = doc.get("waops", doc)
    return table if isinstance(table, dict) else {}


def _set(s: Settings, name: str, value: Any, source: str) -> None:
    if name not in names():
        if source.startswith("env") or source == "flag":
            return
        raise UsageError(f"{source}: unknown setting {name!r} (known: {', '.join(names())})")
    default = getattr(Settings(), name)
    try:
        if isinstance(default, bool):
            v: Any = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            v = int(value)
        elif isinstance(default, float):
            v = float(value)
        else:
            v = str(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {name} must be of type {type(default).__name__}, not {value!r}") from None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
        raise UsageError(f"{source}: {name} must not be negative")
    setattr(s, name, v)
    s.origin[name] = source
