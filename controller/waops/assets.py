"""Where the Ansible content lives: the checkout when run from one, the wheel's copy otherwise."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

@cache
def asset_root() -> Path:
    """Directory holding playbooks/, roles/, inventories/ and ansible.cfg."""
    checkout = _PACKAGE_DIR.parent.parent
    if (checkout / "playbooks").is_dir() and (checkout / "roles").is_dir():
        return checkout
    bundled = _PACKAGE_DIR / "_assets"
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError("waops cannot find its playbooks/ and roles/ (broken install?)")

def playbook(name: str) -> Path:
    return asset_root() / "playbooks" / name


def roles_dir() -> Path:
    return asset_root() / "roles"
