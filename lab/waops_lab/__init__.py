"""waops-lab: the lab (systemd-nspawn hosts), the WhatsApp simulator, the sandbox bot and `waops demo`.

A distribution of its own beside `waops`: operators install `waops` alone and get no nspawn code and no
stand-in for Baileys; the checkout, CI and the demo install both. Its commands reach the `waops` CLI
through the `waops.commands` entry-point group (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_PACKAGE_DIR = Path(__file__).resolve().parent


def sandbox_bot_dir() -> Path:
    """The sandbox bot (a Node.js project whose `baileys` is a vendored stand-in talking to the simulator)."""
    return _PACKAGE_DIR / "sandbox" / "bot"


def group_vars_dir() -> Path:
    """Group variables every lab inventory links beside its hosts file."""
    return _PACKAGE_DIR / "inventory" / "group_vars"
