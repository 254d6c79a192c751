"""Swapping the auth folder in place as the bot user, and rolling back what a killed swap left."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import TYPE_CHECKING

from .base import fsync_dir
from .privdrop import as_bot

if TYPE_CHECKING:
    from .config import BotConfig


def _child_swap(_: None, new: str, target: str) -> None:
    """(as the bot) Put `new` in place of `target` with two renames. A run killed between them leaves
    `.<auth>.old-*` without the auth folder: recover_auth (next locked run) renames it back."""
    parent, base = os.path.split(target)
    old = None
    if os.path.lexists(target):
        old = os.path.join(parent, f".{base}.old-{os.getpid()}-{secrets.token_hex(3)}")
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if old:
            os.rename(old, target)
        raise
    fsync_dir(parent)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _child_recover(_: None, auth_dir: str) -> list[str]:
    """(as the bot) Roll back or clean what a killed restore left beside the auth folder: with the
    folder gone, the newest `.old-*` goes back in its place; every other `.old-*` and every
    `.restore-*` staging folder is removed."""
    parent, base = os.path.split(auth_dir)
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    done: list[str] = []
    olds = [n for n in names if n.startswith(f".{base}.old-")]
    olds.sort(key=lambda n: os.lstat(os.path.join(parent, n)).st_mtime)
    if olds and not os.path.lexists(auth_dir):
        last = olds.pop()
        os.rename(os.path.join(parent, last), auth_dir)
        fsync_dir(parent)
        done.append(f"rolled back {last}")
    for n in olds + [n for n in names if n.startswith(f".{base}.restore-")]:
        p = os.path.join(parent, n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        done.append(f"removed {n}")
    return done


def recover_auth(cfg: BotConfig) -> list[str]:
    """Leftovers of a killed restore, rolled back or cleaned (as the bot user). Caller holds the lock."""
    done = as_bot(cfg, _child_recover, cfg.auth_dir)
    if cfg.sqlite is not None:  # a killed sqlite restore leaves only a staged file beside the database
        done += as_bot(cfg, _child_recover, cfg.sqlite["path"])
    return done
