"""Where the Ansible content lives: the checkout when run from one, the wheel's copy otherwise."""

from __future__ import annotations

import hashlib
import os
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
COLLECTION = "waops.ops"  # the namespace.name of the collection the roles and playbooks form (galaxy.yml)


def role_fqcn(role: str) -> str:
    return f"{COLLECTION}.{role}"


@cache
def collections_path() -> Path:
    """A directory that maps the asset root as ansible_collections/waops/ops, for ANSIBLE_COLLECTIONS_PATH.

    The checkout carries one (.collections, a link back to the checkout); an installed wheel gets one made
    once in the user's cache, so ansible-runner finds the roles by their FQCN either way."""
    root = asset_root()
    namespace, name = COLLECTION.split(".")
    shipped = root / ".collections"
    if (shipped / "ansible_collections" / namespace / name).resolve() == root.resolve():
        return shipped
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # One farm per asset root: two installed versions side by side never see each other's roles.
    farm = cache_home / "waops" / "collections" / hashlib.sha256(str(root).encode()).hexdigest()[:16]
    link = farm / "ansible_collections" / namespace / name
    if not (link.is_symlink() and link.resolve() == root.resolve()):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(root)
        tmp.replace(link)  # atomic: a concurrent run sees the old link or the new one, never none
    return farm

