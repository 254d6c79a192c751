"""Off-host copies: push, read back, fetch and forget backups in the bot's restic repository."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from typing import TYPE_CHECKING, Any

from .base import (
    EXIT_FAILED,
    EXIT_USAGE,
    AgentError,
    fsync_dir,
    iso,
    log,
    now_utc,
    parse_iso,
    read_small_json,
    sha256_file,
    write_json_file,
)
from .catalog import is_verified, list_backups
from .locks import backup_root
from .prune import retention_keep
from .restic import host_id, offhost_config, redact_repo, restic_error, restic_ok, run_restic
from .restore import is_restorable
from .verify import verify_backup

if TYPE_CHECKING:
    from .config import BotConfig
    from .restic import OffhostConfig


# After a verified backup the set is sent to the bot's own restic repository (config `offhost`). restic
# gets the repository and the password file through its environment, never on the command line; the
# password file and the optional env file (S3/B2 keys) are root's 0600. Outcome and age are recorded in
# root's backup dir (`.offhost.json`: dot names are not backup sets) for facts, the check and metrics.

OFFHOST_STATE = ".offhost.json"
OFFHOST_TAG = "waops"


def offhost_state_path(cfg: BotConfig) -> str:
    return os.path.join(cfg.backup_dir, OFFHOST_STATE)


def read_offhost_state(cfg: BotConfig) -> dict[str, Any]:
    try:
        doc = read_small_json(offhost_state_path(cfg))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def record_offhost(cfg: BotConfig, **changes: Any) -> None:
    backup_root(cfg)
    write_json_file(offhost_state_path(cfg), {**read_offhost_state(cfg), **changes})


def snapshot_tags(b: dict[str, Any]) -> list[str]:
    s = b["summary"]
    return [OFFHOST_TAG, f"id={b['id']}", f"reason={s.get('reason')}", f"verified={str(is_verified(b)).lower()}",
            f"linked={str(bool(s.get('creds_linked'))).lower()}", f"created={s.get('created_at')}"]


def remote_backups(oc: OffhostConfig) -> list[dict[str, Any]]:
    """This bot's snapshots as backups (oldest first), with the shape retention and selection read."""
    p = restic_ok(oc, ["snapshots", "--json", "--host", oc.bot, "--tag", OFFHOST_TAG], "listing the off-host copies")
    try:
        snaps = json.loads(p.stdout or b"[]") or []
    except ValueError:
        raise AgentError("listing the off-host copies: restic printed no JSON", EXIT_FAILED) from None
    out = []
    for s in snaps:
        tags = dict(t.split("=", 1) for t in s.get("tags") or [] if "=" in t)
        if not tags.get("id"):
            continue
        out.append({"id": tags["id"], "snapshot": s.get("id"), "paths": s.get("paths") or [],
                    "summary": {"reason": tags.get("reason"), "creds_linked": tags.get("linked") == "true",
                                "created_at": tags.get("created") or s.get("time")},
                    "verify": {"ok": tags.get("verified") == "true"}})
    out.sort(key=lambda b: (str(b["summary"]["created_at"]), b["id"]))
    return out


def offhost_forget(oc: OffhostConfig) -> list[str]:
    """Remote retention by the local rules; each set's newest snapshot counts, older duplicates go."""
    snaps = remote_backups(oc)
    newest: dict[str, dict[str, Any]] = {}
    for b in snaps:
        newest[b["id"]] = b
    keep = retention_keep(list(newest.values()), oc.keep)
    drop = [b["snapshot"] for b in snaps if b["id"] not in keep or newest[b["id"]] is not b]
    if drop:
        restic_ok(oc, ["forget", "--prune", *drop], "off-host retention")
    return [b["id"] for b in snaps if b["snapshot"] in drop]


def offhost_push(cfg: BotConfig, oc: OffhostConfig, bid: str | None) -> dict[str, Any]:
    """Send one local backup set (default: the newest verified) to the repository, then apply retention.
    Caller holds the bot lock. Local sets are only read."""
    started, at = time.monotonic(), iso(now_utc())
    try:
        local = list_backups(cfg)
        b = next((x for x in reversed(local) if x["id"] == bid), None) if bid else \
            next((x for x in reversed(local) if is_verified(x)), None)
        if b is None:
            raise AgentError(f"no local backup {bid!r}" if bid else "no verified local backup to send", EXIT_FAILED)
        tags = ",".join(snapshot_tags(b))
        p = restic_ok(oc, ["backup", "--json", "--host", cfg.name, "--tag", tags, b["id"]],
                      "off-host copy", cwd=cfg.backup_dir)
        snap = None
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(line)
                if doc.get("message_type") == "summary":
                    snap = doc.get("snapshot_id")
        if not snap:
            raise AgentError("off-host copy: restic reported no snapshot", EXIT_FAILED)
        offhost_readback(cfg, oc, b, snap)
        forgotten = offhost_forget(oc)
        if oc.push_check_subset and not repo_check(cfg, oc, oc.push_check_subset)["ok"]:
            raise AgentError("the repository check after the copy failed", EXIT_FAILED)
    except AgentError as e:
        record_offhost(cfg, last_attempt_at=at, last_error=str(e))
        raise AgentError(f"{cfg.name}: off-host copy failed (local backups kept): {e}", EXIT_FAILED) from None
    record_offhost(cfg, last_attempt_at=at, last_error=None, last_ok_at=at, last_backup_id=b["id"],
                   last_backup_created_at=b["summary"].get("created_at"), last_snapshot=snap)
    return {"ok": True, "id": b["id"], "snapshot": snap, "forgotten": forgotten,
            "seconds": round(time.monotonic() - started, 3)}


def offhost_readback(cfg: BotConfig, oc: OffhostConfig, b: dict[str, Any], snap: str) -> None:
    """Read the new snapshot back and compare it with the local set, file by file. restic does not
    upload data it already holds, so a new snapshot may lean on a damaged pack: this catches it now,
    not at the next scheduled check."""
    tmp = os.path.join(cfg.backup_dir, f".tmp-readback-{secrets.token_hex(4)}")
    os.mkdir(tmp, 0o700)
    try:
        restic_ok(oc, ["restore", snap, "--target", tmp], "reading the off-host copy back")
        got = restored_set(tmp, _snapshot_paths(oc, snap), b["id"])
        if got is None:
            raise AgentError("off-host copy read back holds no backup set", EXIT_FAILED)
        for name in sorted(os.listdir(b["path"])):
            mine = os.path.join(b["path"], name)
            if not stat.S_ISREG(os.lstat(mine).st_mode):
                continue
            theirs = os.path.join(got, name)
            if not os.path.isfile(theirs) or sha256_file(mine) != sha256_file(theirs):
                raise AgentError(f"off-host copy read back differs: {name}", EXIT_FAILED)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restored_set(target: str, paths: list[str], bid: str) -> str | None:
    """Where `restic restore` put the set: a one-path snapshot lands at target/<basename>, a
    several-path one below its full path."""
    for p in [os.path.join(target, bid)] + [os.path.join(target, x.lstrip("/")) for x in paths
                                             if os.path.basename(x) == bid]:
        if stat.S_ISDIR(os.lstat(p).st_mode if os.path.lexists(p) else 0):
            return p
    return None


def _snapshot_paths(oc: OffhostConfig, snap: str) -> list[str]:
    p = restic_ok(oc, ["snapshots", "--json", snap], "reading the off-host snapshot")
    try:
        return [str(x) for s in json.loads(p.stdout) for x in s.get("paths") or []]
    except (ValueError, AttributeError, TypeError):
        raise AgentError("reading the off-host snapshot: restic printed no JSON", EXIT_FAILED) from None


def offhost_after_backup(cfg: BotConfig, r: dict[str, Any]) -> dict[str, Any]:
    """Hook of `backup`: a verified backup goes off-host; a failure fails the command, loudly."""
    try:
        oc = offhost_config(cfg)
        if oc is None or not r.get("ok") or r.get("skipped"):
            return r
        r["offhost"] = offhost_push(cfg, oc, r["id"])
    except AgentError as e:
        log(str(e))
        r.update(ok=False, offhost={"ok": False, "error": str(e)})
    return r


def repo_check(cfg: BotConfig, oc: OffhostConfig, subset: str) -> dict[str, Any]:
    """`restic check --read-data-subset`: the copies are read back, not just listed."""
    at, started = iso(now_utc()), time.monotonic()
    p = run_restic(oc, ["check", f"--read-data-subset={subset}"])
    ok, err = p.returncode == 0, None if p.returncode == 0 else restic_error(p)
    record_offhost(cfg, check={"at": at, "ok": ok, "error": err, "subset": subset})
    if not ok:
        log(f"{cfg.name}: off-host repository check failed: {err}")
    return {"bot": cfg.name, "ok": ok, "error": err, "subset": subset,
            "seconds": round(time.monotonic() - started, 3)}


def offhost_init(cfg: BotConfig, oc: OffhostConfig) -> dict[str, Any]:
    """Create the repository when there is none (idempotent: the role runs it on every play)."""
    if run_restic(oc, ["cat", "config"], timeout=120).returncode == 0:
        return {"bot": cfg.name, "ok": True, "created": False}
    restic_ok(oc, ["init"], "creating the off-host repository", timeout=120)
    return {"bot": cfg.name, "ok": True, "created": True}


def offhost_fetch(cfg: BotConfig, oc: OffhostConfig, bid: str | None) -> dict[str, Any]:
    """Bring a set back from the repository into the local backup dir (default: the newest verified
    linked one), then verify it locally; `restore` takes it from there. Caller holds the bot lock."""
    backup_root(cfg)
    remote = remote_backups(oc)
    pick = [b for b in remote if b["id"] == bid] if bid else [b for b in remote if is_restorable(b)]
    if not pick:
        raise AgentError(f"{cfg.name}: no off-host copy {bid!r}" if bid else
                         f"{cfg.name}: no verified linked off-host copy", EXIT_FAILED)
    b = pick[-1]
    final = os.path.join(cfg.backup_dir, b["id"])
    if not os.path.lexists(final):
        tmp = os.path.join(cfg.backup_dir, f".tmp-fetch-{secrets.token_hex(4)}")
        os.mkdir(tmp, 0o700)
        try:
            restic_ok(oc, ["restore", b["snapshot"], "--target", tmp], "fetching the off-host copy")
            src = restored_set(tmp, b["paths"], b["id"])
            if src is None:
                raise AgentError(f"{cfg.name}: off-host copy {b['id']} holds no backup set", EXIT_FAILED)
            os.rename(src, final)
            fsync_dir(cfg.backup_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result = verify_backup(cfg, final)
    return {"bot": cfg.name, "ok": result["ok"], "id": b["id"], "snapshot": b["snapshot"],
            "verified": result["ok"], "errors": result["errors"]}


def offhost_facts(cfg: BotConfig) -> dict[str, Any] | None:
    oc = offhost_config(cfg)
    if oc is None:
        return None
    st = read_offhost_state(cfg)
    ok_at = parse_iso(st.get("last_ok_at"), naive="local")
    created = parse_iso(st.get("last_backup_created_at"), naive="local") or ok_at
    return {"repository": redact_repo(oc.repository), "last_ok_at": st.get("last_ok_at"),
            "last_backup_id": st.get("last_backup_id"), "last_snapshot": st.get("last_snapshot"),
            "last_backup_created_at": st.get("last_backup_created_at"),
            "age_s": int((now_utc() - created).total_seconds()) if created else None,
            "last_attempt_at": st.get("last_attempt_at"), "last_error": st.get("last_error"),
            "check": st.get("check")}


def cmd_offhost(cfg: BotConfig, action: str, bid: str | None) -> dict[str, Any]:
    oc = offhost_config(cfg)
    if oc is None:
        raise AgentError(f"{cfg.name}: no offhost repository configured", EXIT_USAGE)
    if action == "init":
        return offhost_init(cfg, oc)
    if action == "push":
        return {"bot": cfg.name, **offhost_push(cfg, oc, bid)}
    if action == "check":
        return repo_check(cfg, oc, oc.check_subset)
    if action == "fetch":
        return offhost_fetch(cfg, oc, bid)
    if action == "claim":
        return offhost_claim(cfg, oc, bid)
    if action == "owner":
        return {"bot": cfg.name, "ok": True, "owner": offhost_owner(cfg, oc), "host": host_id(cfg)}
    return {"bot": cfg.name, "ok": True, "backups": [
        {"id": b["id"], "snapshot": b["snapshot"], "reason": b["summary"]["reason"],
         "created_at": b["summary"]["created_at"], "verified": is_verified(b),
         "creds_linked": b["summary"]["creds_linked"]} for b in reversed(remote_backups(oc))]}


def h_offhost(r: dict[str, Any]) -> str:
    if "backups" in r:
        return "\n".join([f"{r['bot']}: {len(r['backups'])} off-host copies"] + [
            f"  {b['id']}  {b['reason']:<11} {b['created_at']}  verified={b['verified']} linked={b['creds_linked']}"
            for b in r["backups"]])
    if "created" in r:
        return f"{r['bot']}: off-host repository {'created' if r['created'] else 'exists'}"
    if "subset" in r:
        return f"{r['bot']}: off-host check ({r['subset']}) {'ok' if r['ok'] else 'FAILED: ' + str(r['error'])}"
    return f"{r['bot']}: off-host {r.get('id')} {'ok' if r['ok'] else 'FAILED'} (snapshot {r.get('snapshot')})"



# A moved bot must never run on its old host again: two hosts on one session replace each other (440)
# until one gives up. `fence` stops the bot here and masks its unit, so not even a reboot starts it, and
# leaves a marker beside the config. The new host records itself as the owner in the bot's restic
# repository (`offhost claim`); an old host that was down during the move reads that record before its
# bot starts (`gate`, an ExecStartPre the role installs) and in every check, and fences itself.

OWNER_TAG = "waops-owner"


def offhost_owner(cfg: BotConfig, oc: OffhostConfig, timeout: float = 60) -> str | None:
    """The host named by the newest owner record in the bot's repository (None: no record)."""
    p = restic_ok(oc, ["snapshots", "--json", "--host", cfg.name, "--tag", OWNER_TAG, "--latest", "1"],
                  "reading the owner record", timeout=timeout)
    try:
        snaps = json.loads(p.stdout or b"[]") or []
    except ValueError:
        raise AgentError("reading the owner record: restic printed no JSON", EXIT_FAILED) from None
    snaps.sort(key=lambda s: str(s.get("time")))
    for s in reversed(snaps):
        owner = next((t[6:] for t in s.get("tags") or [] if t.startswith("owner=")), None)
        if owner:
            return owner
    return None


def offhost_claim(cfg: BotConfig, oc: OffhostConfig, owner: str | None) -> dict[str, Any]:
    """Record `owner` (default: this host) as the bot's only host in its repository."""
    owner = owner or host_id(cfg)
    if not re.match(r"^[A-Za-z0-9_.-]+$", owner):
        raise AgentError(f"bad owner name {owner!r}", EXIT_USAGE)
    body = json.dumps({"bot": cfg.name, "owner": owner, "at": iso(now_utc())}).encode()
    p = run_restic(oc, ["backup", "--stdin", "--stdin-filename", "owner.json", "--host", cfg.name,
                        "--tag", f"{OWNER_TAG},owner={owner}"], input_data=body)
    if p.returncode != 0:
        raise AgentError(f"{cfg.name}: recording the owner failed: {restic_error(p)}", EXIT_FAILED)
    return {"bot": cfg.name, "ok": True, "owner": owner}
