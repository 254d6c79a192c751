"""The WhatsApp library the bot's current release runs (read as the bot user)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from .base import read_small_json
from .privdrop import as_bot

if TYPE_CHECKING:
    from .config import BotConfig


def library_info(cfg: BotConfig) -> dict[str, Any]:
    """The installed library and releases, read as the bot user (it owns the release directories)."""
    return as_bot(cfg, _child_library_info, cfg)


def _child_library_info(_: None, cfg: BotConfig) -> dict[str, Any]:
    current = os.path.join(cfg.release_root, "current")
    info: dict[str, Any] = {"package": cfg.library_package, "installed": None,
                            "expected": cfg.expected_library_version, "known_bad": False,
                            "release": None, "previous_release": None}
    try:
        pkg = read_small_json(os.path.join(current, "node_modules", cfg.library_package, "package.json"),
                              follow=True)
        info["installed"] = pkg.get("version") if isinstance(pkg, dict) else None
    except (OSError, ValueError) as e:
        info["error"] = f"package.json: {e.__class__.__name__}"
    info["known_bad"] = info["installed"] in cfg.known_bad_versions
    releases_dir = os.path.join(cfg.release_root, "releases")
    with contextlib.suppress(OSError):
        release = os.path.basename(os.path.realpath(current)) if os.path.islink(current) else None
        info["release"] = release
        names = sorted(n for n in os.listdir(releases_dir) if os.path.isdir(os.path.join(releases_dir, n)))
        if release in names:
            idx = names.index(release)
            info["previous_release"] = names[idx - 1] if idx > 0 else None
        elif names:
            info["previous_release"] = names[-1]
    return info
