"""Baileys auth-store key names: their type, the creds summary and the device fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .base import KEY_TYPES


def key_type(name: str) -> str:
    """`pre-key-12.json` -> `pre-key`; `creds.json` -> `creds`; unknown -> `other`."""
    base = name[:-5] if name.endswith(".json") else name
    if base == "creds":
        return "creds"
    for t in KEY_TYPES:
        if base.startswith(t + "-"):
            return t
    return "other"


def creds_summary(creds: Any) -> dict[str, Any]:
    me = creds.get("me") if isinstance(creds, dict) else None
    me_id = me.get("id") if isinstance(me, dict) else None
    linked = bool(me_id) and bool(creds.get("account")) if isinstance(creds, dict) else False
    return {"parses": isinstance(creds, dict), "linked": linked, "me_id": me_id,
            "fingerprint": device_fingerprint(creds)}


def device_fingerprint(creds: Any) -> str | None:
    """Which linked device these creds are, without a secret: the first 16 hex of sha256 over me.id and the
    identity PUBLIC key. Two hosts with the same fingerprint run one device twice (a 440 loop)."""
    if not isinstance(creds, dict):
        return None
    me = creds.get("me")
    me_id = me.get("id") if isinstance(me, dict) else None
    key = creds.get("signedIdentityKey")
    public = key.get("public") if isinstance(key, dict) else None
    if isinstance(public, dict):  # Baileys' BufferJSON: {"type": "Buffer", "data": "<base64>"}
        public = public.get("data")
    if not isinstance(me_id, str) or not me_id or not public:
        return None
    raw = public if isinstance(public, str) else json.dumps(public, separators=(",", ":"))
    return hashlib.sha256(me_id.encode() + b"\0" + raw.encode()).hexdigest()[:16]
