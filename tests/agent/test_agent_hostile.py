"""Hostile backup sets: archives whose checksums are all correct but whose members would write
outside the auth folder (or are links, devices, fifos). Restore must refuse them and write nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_helpers import Bot, snapshot


def craft_backup(bot: Bot, bid: str, members: list[tuple[tarfile.TarInfo, bytes | None]],
                 tamper: Callable[[dict], None] | None = None) -> Path:
    """A backup dir the agent could have written, except for its hostile archive."""
    buf = io.BytesIO()
    entries: dict[str, dict] = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
                entries[ti.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            else:
                tar.addfile(ti)
                entries[ti.name + ("/" if ti.isdir() else "")] = {"type": "other"}
    raw = buf.getvalue()
    d = bot.backups / bid
    d.mkdir(parents=True, mode=0o700)
    (d / "auth.tar").write_bytes(raw)
    sha = hashlib.sha256(raw).hexdigest()
    manifest = {
        "format": 1, "id": bid, "bot": "shop", "reason": "manual", "created_at": "2026-01-01T00:00:00Z",
        "creds_linked": True, "auth_store": "files", "encrypted": False,
        "members": {"auth.tar": {"kind": "auth-tar", "entries": entries, "sha256": sha, "size": len(raw),
                                 "plain_sha256": sha, "plain_size": len(raw), "encrypted": False}},
    }
    if tamper:
        tamper(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def reg(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.mode = 0o600
    return ti, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.devmajor, ti.devminor = 1, 3
    return ti, None


HOSTILE = {
    "dotdot": [reg("creds.json"), reg("../escaped.json")],
    "dotdot_nested": [reg("creds.json"), reg("sub/../../escaped.json")],
    "absolute": [reg("creds.json"), reg("/tmp/waops-escaped-absolute.json")],
    "symlink": [reg("creds.json"), special("session-x.json", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink_then_write": [special("sub", tarfile.SYMTYPE, "/tmp"), reg("sub/waops-escaped.json")],
    "hardlink": [reg("creds.json"), special("pre-key-1.json", tarfile.LNKTYPE, "/etc/shadow")],
    "char_device": [reg("creds.json"), special("null", tarfile.CHRTYPE)],
    "block_device": [reg("creds.json"), special("disk", tarfile.BLKTYPE)],
    "fifo": [reg("creds.json"), special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_written(bot: Bot, case: str) -> None:
    parent_before = sorted(os.listdir(bot.auth.parent))
    before = snapshot(bot.auth)
    craft_backup(bot, "20260101T000000Z-manual-bad000", HOSTILE[case])
    p = bot.run("restore", "20260101T000000Z-manual-bad000")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "refusing to restore" in p.stderr and "unsafe member" in p.stderr
    assert snapshot(bot.auth) == before
    assert sorted(os.listdir(bot.auth.parent)) == parent_before  # no escaped file, no temp dir left
    assert not Path("/tmp/waops-escaped-absolute.json").exists()
    assert not Path("/tmp/waops-escaped.json").exists()
    assert [b.name for b in bot.backups.iterdir()] == ["20260101T000000Z-manual-bad000"]  # no pre-restore


def test_unlisted_member_fails_verify(bot: Bot) -> None:
    def drop_entry(m: dict) -> None:
        del m["members"]["auth.tar"]["entries"]["extra.json"]

    craft_backup(bot, "20260101T000000Z-manual-unl000", [reg("creds.json"), reg("extra.json")], drop_entry)
    out = bot.json("verify", "20260101T000000Z-manual-unl000", expect=1)["results"][0]["backups"][0]
    assert any("not listed in the manifest" in e for e in out["errors"])
    assert bot.run("restore", "20260101T000000Z-manual-unl000").returncode == 1


def test_member_name_in_manifest_cannot_escape(bot: Bot) -> None:
    def rename(m: dict) -> None:
        m["members"]["../../auth.tar"] = m["members"].pop("auth.tar")

    craft_backup(bot, "20260101T000000Z-manual-nam000", [reg("creds.json")], rename)
    out = bot.json("verify", "20260101T000000Z-manual-nam000", expect=1)["results"][0]["backups"][0]
    assert any("bad member name" in e for e in out["errors"])


def test_backup_of_another_bot_is_refused(bot: Bot) -> None:
    def other(m: dict) -> None:
        m["bot"] = "other"

    craft_backup(bot, "20260101T000000Z-manual-oth000", [reg("creds.json")], other)
    p = bot.run("restore", "20260101T000000Z-manual-oth000")
    assert p.returncode == 1 and "not 'shop'" in p.stderr


def test_safe_crafted_archive_restores(bot: Bot) -> None:
    """The crafting helper itself is sound: the same shape with safe members restores."""
    craft_backup(bot, "20260101T000000Z-manual-ok0000",
                 [reg("creds.json", b'{"me": {"id": "1@s"}, "account": {}}'), reg("sub/pre-key-1.json")])
    bot.json("restore", "20260101T000000Z-manual-ok0000")
    assert sorted(snapshot(bot.auth)) == ["creds.json", "sub/pre-key-1.json"]


def test_backup_skips_links_and_specials_in_the_auth_folder(bot: Bot, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret"
    secret.write_text("do not copy")
    (bot.auth / "link.json").symlink_to(secret)
    os.mkfifo(bot.auth / "fifo")
    r = bot.backup()
    m = json.loads((bot.backups / r["id"] / "manifest.json").read_text())
    assert "link.json" not in m["members"]["auth.tar"]["entries"]
    assert sorted(m["skipped"]) == ["fifo", "link.json"]
    assert b"do not copy" not in (bot.backups / r["id"] / "auth.tar").read_bytes()
