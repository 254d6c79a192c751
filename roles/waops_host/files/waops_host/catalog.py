"""The backups on disk: listing, manifest summaries, the "recent enough" skip."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any

from .base import MANIFEST, MAX_SMALL_JSON, SUMMARY_KEYS, VERIFY_MARK, now_utc, open_regular, parse_iso, read_small_json
from .locks import backup_root

if TYPE_CHECKING:
    from .config import BotConfig


def list_backups(cfg: BotConfig) -> list[dict[str, Any]]:
    """Complete backups (a dir with a manifest, not `.tmp-`), oldest first."""
    out = []
    if not os.path.lexists(cfg.backup_dir):
        return []
    backup_root(cfg)
    names = os.listdir(cfg.backup_dir)
    for n in names:
        if n.startswith("."):
            continue
        d = os.path.join(cfg.backup_dir, n)
        mark: Any = None
        try:
            if not stat.S_ISDIR(os.lstat(d).st_mode) or not os.path.exists(os.path.join(d, MANIFEST)):
                continue
            with contextlib.suppress(OSError, ValueError):
                mark = read_small_json(os.path.join(d, VERIFY_MARK))
            mark = mark if isinstance(mark, dict) else None
            # The verify marker carries the manifest's summary, so listing (and facts) never parse a
            # manifest of 10k entries; without a marker we read the manifest itself.
            summary = (mark or {}).get("summary")
            if not isinstance(summary, dict) or summary.get("id") != n:
                summary = read_manifest_summary(os.path.join(d, MANIFEST))
        except (OSError, ValueError):
            continue
        if not summary or summary.get("id") != n:
            continue
        out.append({"id": n, "path": d, "summary": summary, "verify": mark})
    out.sort(key=lambda b: (str(b["summary"].get("created_at")), b["id"]))
    return out


def recent_backup(cfg: BotConfig, reason: str, min_interval: float) -> dict[str, Any] | None:
    """The result for a skipped backup when one with `reason` is younger than `min_interval` seconds.
    The bot can ask for keep-alive backups at will (its socket); with --prune, a flood of them would
    rotate the older good backups out, so such requests are rate limited."""
    if min_interval <= 0:
        return None
    now = now_utc()
    for b in reversed(list_backups(cfg)):
        created = parse_iso(b["summary"].get("created_at"), naive="local")
        if b["summary"].get("reason") == reason and created is not None:
            age = (now - created).total_seconds()
            if 0 <= age < min_interval:
                return {"bot": cfg.name, "ok": True, "skipped": True, "id": b["id"], "reason": reason,
                        "verified": is_verified(b), "entries": None, "rows": None, "seconds": 0.0,
                        "why": f"a {reason} backup is {int(age)} s old (minimum interval {int(min_interval)} s)"}
            break
    return None


def manifest_summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in SUMMARY_KEYS}


_MEMBERS_KEY_RE = re.compile(rb',\s*"members"\s*:')


def read_manifest_summary(path: str) -> dict[str, Any] | None:
    """The summary keys of a manifest without parsing its member list: listing and facts read only the
    head (the writer puts `members` last), so a manifest of any size costs at most MAX_SMALL_JSON here."""
    with open_regular(path) as f:
        head = f.read(MAX_SMALL_JSON + 1)
    if len(head) > MAX_SMALL_JSON:
        # A `"` right after a comma (and blanks) cannot be inside a JSON string: there it is escaped.
        cut = _MEMBERS_KEY_RE.search(head)
        if cut is None:
            raise ValueError(f"{path}: no summary in the first {MAX_SMALL_JSON} bytes")
        head = head[:cut.start()] + b"}"
    m = json.loads(head)
    return manifest_summary(m) if isinstance(m, dict) else None


def is_verified(b: dict[str, Any]) -> bool:
    return bool(b.get("verify") and b["verify"].get("ok"))
