"""Which backup `restore --latest-verified` brings back: never a device the server revoked (a reset
abandoned it), and never stopped by a planted or broken newest backup while a good one exists."""

from __future__ import annotations

import hashlib
import json
import shutil

from agent_helpers import Bot, snapshot


def link(bot: Bot, identity: str) -> str:
    """Write creds.json of a linked device with its own identity key; returns the expected fingerprint."""
    me_id = "15550100001:3@s.whatsapp.net"
    creds = {
        "noiseKey": {"private": {"type": "Buffer", "data": "AAEC"}},
        "registered": False,
        "signedIdentityKey": {
            "public": {"type": "Buffer", "data": identity},
            "private": {"type": "Buffer", "data": "c2VjcmV0LW5vdC1wcmludGVk"},
        },
        "me": {"id": me_id, "name": "shop"},
        "account": {"details": "CAE=", "accountSignature": "AAA="},
    }
    (bot.auth / "creds.json").write_text(json.dumps(creds))
    return hashlib.sha256(me_id.encode() + b"\0" + identity.encode()).hexdigest()[:16]


def test_manifest_names_the_device_never_its_secret(bot: Bot) -> None:
    fp = link(bot, "QUFBQQ==")
    r = bot.backup("cron")
    manifest = (bot.backups / r["id"] / "manifest.json").read_text()
    assert json.loads(manifest)["device"] == fp
    assert "c2VjcmV0LW5vdC1wcmludGVk" not in manifest


def test_the_pre_reset_device_is_never_restored(bot: Bot) -> None:
    """logged_out -> reset -> relink -> creds.json cut short: the revoked device must not come back."""
    link(bot, "QUFBQQ==")
    bot.backup("cron")
    reset = bot.json("reset")["results"][0]
    assert reset["ok"]
    link(bot, "QkJCQg==")  # the new link: a new identity key
    (bot.auth / "creds.json").write_text('{"me": {"id"')  # creds_lost before any backup of the new device
    before = snapshot(bot.auth)
    p = bot.run("restore", "--latest-verified", "--json")
    assert p.returncode == 1, p.stdout
    assert "no verified backup of the linked device" in json.loads(p.stdout)["results"][0]["error"]
    assert snapshot(bot.auth) == before


def test_the_new_device_is_restored_after_a_relink(bot: Bot) -> None:
    link(bot, "QUFBQQ==")
    bot.backup("cron")
    bot.json("reset")
    new = link(bot, "QkJCQg==")
    good = bot.backup("manual")["id"]
    (bot.auth / "creds.json").write_text("{truncated")
    bot.backup("manual")  # a snapshot of the broken state: not linked, never picked
    out = bot.json("restore", "--latest-verified")["results"][0]
    assert out["id"] == good and out["device"] == new
    facts = json.loads(bot.run("facts", "--json", check=True).stdout)["bots"][0]
    assert facts["backups"]["latest_restorable"]["id"] == good


def test_a_planted_newest_backup_is_skipped_for_the_next_good_one(bot: Bot) -> None:
    link(bot, "QUFBQQ==")
    good = bot.backup("cron")["id"]
    # A copy named as the newest, its archive tampered with, its verify mark forged to say "ok".
    planted = good.replace(good[:8], "29991231")
    shutil.copytree(bot.backups / good, bot.backups / planted)
    m = json.loads((bot.backups / planted / "manifest.json").read_text())
    m["id"], m["created_at"] = planted, "2999-12-31T00:00:00+00:00"
    (bot.backups / planted / "manifest.json").write_text(json.dumps(m))
    mark = json.loads((bot.backups / planted / "verify.json").read_text())
    mark["summary"].update(id=planted, created_at=m["created_at"])
    (bot.backups / planted / "verify.json").write_text(json.dumps(mark))
    tar = bot.backups / planted / "auth.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF
    tar.write_bytes(bytes(data))
    assert planted in [b["id"] for b in bot.listing() if b["verified"]]  # listed as verified: the mark lies
    (bot.auth / "creds.json").write_text("{truncated")
    out = bot.json("restore", "--latest-verified")["results"][0]
    assert out["id"] == good
    assert [r["id"] for r in out["refused"]] == [planted]
    assert "checksum" in out["refused"][0]["why"]
    assert json.loads((bot.auth / "creds.json").read_text())["me"]["id"].startswith("15550100001")
