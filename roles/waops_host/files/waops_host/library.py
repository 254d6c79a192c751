"""The WhatsApp library the bot's current release (or an adopted bot's working directory) runs, read as the bot."""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

from .base import open_regular, read_small_json
from .privdrop import as_bot

if TYPE_CHECKING:
    from .config import BotConfig


def library_info(cfg: BotConfig) -> dict[str, Any]:
    """The installed library and releases, read as the bot user (it owns the release directories)."""
    return as_bot(cfg, _child_library_info, cfg)


def _child_library_info(_: None, cfg: BotConfig) -> dict[str, Any]:
    if cfg.workdir is not None:
        return _workdir_library_info(cfg)
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


def _workdir_library_info(cfg: BotConfig) -> dict[str, Any]:
    """(as the bot) An adopted bot's library, read from its working directory; its release is the git
    commit checked out there (None when it is not a git working copy)."""
    assert cfg.workdir is not None
    info: dict[str, Any] = {"package": cfg.library_package, "installed": None,
                            "expected": cfg.expected_library_version, "known_bad": False,
                            "release": git_head(cfg.workdir), "previous_release": None, "workdir": cfg.workdir}
    try:
        pkg = read_small_json(os.path.join(cfg.workdir, "node_modules", cfg.library_package, "package.json"),
                              follow=True)
        info["installed"] = pkg.get("version") if isinstance(pkg, dict) else None
    except (OSError, ValueError) as e:
        info["error"] = f"package.json: {e.__class__.__name__}"
    info["known_bad"] = info["installed"] in cfg.known_bad_versions
    return info


def git_head(workdir: str) -> str | None:
    """The commit a git working copy has checked out, from .git's own files (no git process)."""
    git = os.path.join(workdir, ".git")
    try:
        with open_regular(os.path.join(git, "HEAD"), follow=True) as f:
            head = f.read(256).decode("ascii", "replace").strip()
        if not head.startswith("ref: "):
            return head if re.fullmatch(r"[0-9a-f]{40}", head) else None
        ref = head[5:].strip()
        if ".." in ref.split("/"):
            return None
        with contextlib.suppress(FileNotFoundError):
            with open_regular(os.path.join(git, ref), follow=True) as f:
                sha = f.read(64).decode("ascii", "replace").strip()
            return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None
        with open_regular(os.path.join(git, "packed-refs"), follow=True) as f:
            for line in f.read(1 << 20).decode("utf-8", "replace").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and re.fullmatch(r"[0-9a-f]{40}", sha):
                    return sha
    except OSError:
        return None
    return None
