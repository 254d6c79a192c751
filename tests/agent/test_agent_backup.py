"""Backup, verify, list, restore, prune, reset and prune-keys of the host agent, run as a process."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from agent_helpers import AGENT, BOT_UID, PYTHON, Bot, psql, rows, snapshot

from waops.facts import agent_zip, stream_command


def test_files_round_trip_is_identical(bot: Bot) -> None:
    (bot.auth / "sub").mkdir()
    (bot.auth / "sub" / "nested.json").write_text("{}")
    before = snapshot(bot.auth)
    r = bot.backup("cron")
    assert r["ok"] and r["verified"] and r["creds_linked"]
    d = bot.backups / r["id"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["bot"] == "shop" and manifest["reason"] == "cron" and manifest["creds_linked"] is True
    assert set(manifest["members"]["auth.tar"]["entries"]) >= {"creds.json", "pre-key-1.json", "sub/"}
    # files 0600, dirs 0700
    assert (d.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in d.iterdir())

    shutil.rmtree(bot.auth)
    out = bot.json("restore", r["id"])["results"][0]
    assert out["ok"] and out["pre_restore_backup"]
    assert snapshot(bot.auth) == before
    assert (bot.auth.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in bot.auth.rglob("*") if p.is_file())
    if os.geteuid() == 0:  # written by the bot's user (config user "nobody"); the backups stay root's
        assert {p.stat().st_uid for p in [bot.auth, *bot.auth.rglob("*")]} == {65534}
        assert {p.stat().st_uid for p in [bot.backups, *(bot.backups / r["id"]).iterdir()]} == {0}


def test_latest_verified_skips_unlinked_snapshots(bot: Bot) -> None:
    good = bot.backup("cron")["id"]
    (bot.auth / "creds.json").write_text("{truncated")  # creds_lost
    broken = bot.backup("manual")
    assert broken["verified"] and not broken["creds_linked"]
    out = bot.json("restore", "--latest-verified")["results"][0]
    assert out["id"] == good
    assert json.loads((bot.auth / "creds.json").read_text())["me"]["id"].startswith("15550100001")


def test_postgres_round_trip_is_identical_and_scoped(pgbot: Bot, pgdb: str) -> None:
    before, other = rows(pgdb), rows(pgdb, "other")
    r = pgbot.backup("cron")
    assert r["ok"] and r["rows"] == 202 and r["creds_linked"]
    psql("DELETE FROM baileys_auth WHERE session = 'shop' AND key LIKE 'pre-key-1%'; "
         "UPDATE baileys_auth SET value = '{}' WHERE session = 'shop' AND key = 'creds'; "
         "INSERT INTO baileys_auth(session, key, value) VALUES ('shop', 'pre-key-9999', '{}')", pgdb)
    assert rows(pgdb) != before
    out = pgbot.json("restore", r["id"])["results"][0]
    assert out["rows"] == 202
    assert rows(pgdb) == before
    assert rows(pgdb, "other") == other


def test_password_never_on_a_command_line(pgbot: Bot) -> None:
    # The password file is handed to libpq by path; the secret is not in the config, argv or env.
    cfg = json.loads((pgbot.cfg_dir / "shop.json").read_text())
    assert "password" not in json.dumps({k: v for k, v in cfg["postgres"].items() if k != "password_file"})
    src = "".join(p.read_text() for p in (AGENT.parent / "waops_host").glob("*.py"))
    assert "PGPASSWORD" not in src and "password_file" in src


def test_checksum_mismatch_is_refused_and_nothing_written(bot: Bot) -> None:
    r = bot.backup()
    tar = bot.backups / r["id"] / "auth.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # inside the first member's data
    tar.write_bytes(bytes(data))
    v = bot.json("verify", r["id"], expect=1)["results"][0]
    assert not v["ok"] and any("checksum mismatch" in e for e in v["backups"][0]["errors"])
    before, listing = snapshot(bot.auth), {p.name for p in bot.backups.iterdir()}
    p = bot.run("restore", r["id"])
    assert p.returncode == 1 and "refusing to restore" in p.stderr
    assert snapshot(bot.auth) == before
    assert {p.name for p in bot.backups.iterdir()} == listing  # not even a pre-restore backup


def test_member_checksum_in_manifest_is_checked(bot: Bot) -> None:
    r = bot.backup()
    mpath = bot.backups / r["id"] / "manifest.json"
    m = json.loads(mpath.read_text())
    m["members"]["auth.tar"]["entries"]["creds.json"]["sha256"] = "0" * 64
    mpath.write_text(json.dumps(m))
    v = bot.json("verify", r["id"], expect=1)["results"][0]["backups"][0]
    assert any("member checksum mismatch" in e for e in v["errors"])


def test_two_concurrent_backups_both_complete(bot: Bot) -> None:
    bot.populate(prekeys=3000)
    cmd = [PYTHON, str(AGENT), "backup", "--bot", "shop", "--config-dir", str(bot.cfg_dir),
           "--lock-dir", str(bot.lock_dir), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    listing = bot.listing()
    assert len(listing) == 2 and all(b["verified"] for b in listing)
    assert bot.json("verify")["ok"]
    assert not [p for p in bot.backups.iterdir() if p.name.startswith(".tmp-")]


def test_lock_busy_exits_75(bot: Bot) -> None:
    bot.lock_dir.mkdir(exist_ok=True)
    fd = os.open(bot.lock_dir / "waops-shop.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = bot.run("backup", "--lock-wait", "0.3")
        assert p.returncode == 75 and "busy" in p.stderr
    finally:
        os.close(fd)
    assert not bot.backups.exists() or not list(bot.backups.iterdir())


def test_sigkill_midway_leaves_only_tmp_that_is_ignored_and_cleaned(bot: Bot) -> None:
    good = bot.backup("cron")["id"]
    bot.populate(prekeys=20000)
    cmd = [PYTHON, str(AGENT), "backup", "--bot", "shop", "--config-dir", str(bot.cfg_dir),
           "--lock-dir", str(bot.lock_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    killed_midway = False
    while time.monotonic() < deadline and proc.poll() is None:
        tmps = [p for p in bot.backups.iterdir() if p.name.startswith(".tmp-")]
        if tmps and (tmps[0] / "auth.tar").exists() and (tmps[0] / "auth.tar").stat().st_size > 200_000:
            proc.send_signal(signal.SIGKILL)
            killed_midway = True
            break
        time.sleep(0.002)
    proc.wait()
    if not killed_midway:
        pytest.skip("the backup finished before it could be killed")
    assert [p.name for p in bot.backups.iterdir() if p.name.startswith(".tmp-")]
    assert [b["id"] for b in bot.listing()] == [good]
    (bot.auth / "creds.json").unlink()
    assert bot.json("restore", "--latest-verified")["results"][0]["id"] == good
    r = bot.backup("cron")
    assert r["cleaned_tmp"] or not [p for p in bot.backups.iterdir() if p.name.startswith(".tmp-")]
    assert not [p for p in bot.backups.iterdir() if p.name.startswith(".tmp-")]


def _mark_unverified(bot: Bot, bid: str) -> None:
    (bot.backups / bid / "verify.json").write_text(json.dumps({"ok": False, "errors": ["test"]}))


def test_retention_keeps_last_n_newest_verified_and_pre_reset(bot: Bot) -> None:
    ids = [bot.backup(reason)["id"] for reason in ("pre-reset", "cron", "cron", "cron", "cron", "cron")]
    # the two newest fail verification: the newest verified one is ids[3]
    _mark_unverified(bot, ids[4])
    _mark_unverified(bot, ids[5])
    r = bot.json("prune", "--keep", "2")["results"][0]
    left = [b["id"] for b in reversed(bot.listing())]  # list prints newest first
    assert left == [ids[0], ids[3], ids[4], ids[5]]
    assert sorted(r["deleted"]) == sorted([ids[1], ids[2]])


def test_retention_keeps_the_newest_linked_backup(bot: Bot) -> None:
    linked = bot.backup("cron")["id"]
    (bot.auth / "creds.json").write_text("{}")  # logged out: every later backup holds unlinked creds
    later = [bot.backup("cron")["id"] for _ in range(3)]
    bot.json("prune", "--keep", "2")
    assert [b["id"] for b in bot.listing()] == [*later[-2:][::-1], linked]  # newest first


def test_retention_uses_backup_keep_and_backup_prune_flag(bot: Bot) -> None:
    bot.write_config(backup_keep=3)
    for _ in range(5):
        out = bot.json("backup", "--reason", "cron", "--prune")["results"][0]
    assert out["prune"]["ok"]
    assert len(bot.listing()) == 3


def test_reset_clears_auth_and_rows_after_verified_backup(pgbot: Bot, pgdb: str) -> None:
    other = rows(pgdb, "other")
    r = pgbot.json("reset")["results"][0]
    assert r["rows_deleted"] == 202
    assert pgbot.auth.is_dir() and not list(pgbot.auth.iterdir())
    assert rows(pgdb) == [] and rows(pgdb, "other") == other
    pre = [b for b in pgbot.listing() if b["id"] == r["pre_reset_backup"]]
    assert pre and pre[0]["reason"] == "pre-reset" and pre[0]["verified"]
    # the pre-reset backup brings everything back
    pgbot.json("restore", r["pre_reset_backup"])
    assert len(rows(pgdb)) == 202


def test_reset_refused_when_backup_fails(pgbot: Bot) -> None:
    cfg = json.loads((pgbot.cfg_dir / "shop.json").read_text())
    pgbot.write_config(postgres={**cfg["postgres"], "port": 1})  # nothing listens there
    before = snapshot(pgbot.auth)
    p = pgbot.run("reset")
    assert p.returncode == 1 and "PostgreSQL 127.0.0.1:1: " in p.stderr and "Connection refused" in p.stderr
    assert snapshot(pgbot.auth) == before
    assert not [p for p in pgbot.backups.iterdir()]  # tmp removed, nothing kept


def test_prune_keys(bot: Bot) -> None:
    bot.write_config(prune_keys={"prekeys_keep": 5, "sender_key_days": 7})
    (bot.auth / "session-broken.0.json").write_text("")
    (bot.auth / "session-bad.0.json").write_text("{trunc")
    old = bot.auth / "sender-key-120363@g.us--1555@s.whatsapp.net.json"
    old.write_text("{}")
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    (bot.auth / "sender-key-120364@g.us--1555@s.whatsapp.net.json").write_text("{}")
    r = bot.json("prune-keys")["results"][0]
    assert r["files_removed"] == {"session": 2, "pre-key": 25, "sender-key": 1}
    left = sorted(p.name for p in bot.auth.iterdir())
    assert [n for n in left if n.startswith("pre-key-")] == sorted(f"pre-key-{i}.json" for i in range(26, 31))
    assert "session-15550100002.0.json" in left and "sender-key-memory-120363@g.us.json" in left
    assert "sender-key-120364@g.us--1555@s.whatsapp.net.json" in left
    assert [b["reason"] for b in bot.listing()] == ["pre-prune"]


def test_prune_keys_postgres(pgbot: Bot, pgdb: str) -> None:
    pgbot.write_config(prune_keys={"prekeys_keep": 50, "sessions": "all"})
    r = pgbot.json("prune-keys")["results"][0]
    assert r["db_removed"] == {"session": 1, "pre-key": 150, "sender-key": 0}
    keys = [x.split("=", 1)[0] for x in rows(pgdb)]
    assert "creds" in keys and "pre-key-200" in keys and "pre-key-150" not in keys
    assert len(rows(pgdb, "other")) == 2


def test_encrypted_backup_round_trip(bot: Bot, tmp_path: Path) -> None:
    if not shutil.which("age") or not shutil.which("age-keygen"):
        pytest.skip("age is not installed")
    ident = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(ident)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(ident)], check=True, capture_output=True,
                               text=True).stdout.strip()
    bot.write_config(backup_age_recipient=recipient)
    before = snapshot(bot.auth)
    r = bot.backup()
    files = sorted(p.name for p in (bot.backups / r["id"]).iterdir())
    assert files == ["auth.tar.age", "manifest.json", "verify.json"]
    assert b"15550100001" not in (bot.backups / r["id"] / "auth.tar.age").read_bytes()
    assert r["verify_level"] == "ciphertext"  # no identity on this host: ciphertext checked only
    m = json.loads((bot.backups / r["id"] / "manifest.json").read_text())
    assert m["members"]["auth.tar.age"]["plain_sha256"] and m["members"]["auth.tar.age"]["entries"]
    # restore needs the identity
    assert bot.run("restore", r["id"]).returncode == 1
    bot.write_config(backup_age_identity_file=str(ident))
    v = bot.json("verify", r["id"])["results"][0]["backups"][0]
    assert v["ok"] and v["level"] == "full"
    shutil.rmtree(bot.auth)
    bot.json("restore", r["id"])
    assert snapshot(bot.auth) == before


@pytest.mark.parametrize("encrypted", [False, True])
def test_disk_full_cleans_tmp_and_keeps_old_backups(bot: Bot, tmp_path: Path, encrypted: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    if encrypted:
        if not shutil.which("age-keygen"):
            pytest.skip("age is not installed")
        key = tmp_path / "age.key"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        bot.write_config(backup_age_recipient=subprocess.run(
            ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip())
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        bot.write_config(backup_dir=str(mnt / "backups"))
        first = bot.backup()["id"]
        (bot.auth / "big.bin").write_bytes(os.urandom(1 << 20))
        p = bot.run("backup")
        assert p.returncode == 1 and "no space left" in p.stderr.lower(), p.stderr
        assert "Traceback" not in p.stderr
        assert sorted(x.name for x in (mnt / "backups").iterdir()) == [first]
        assert bot.json("verify", first)["ok"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_bad_config_exits_2_with_one_line(bot: Bot) -> None:
    (bot.cfg_dir / "shop.json").write_text("{not json")
    p = bot.run("list")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    bot.write_config(auth_store="redis")
    p = bot.run("backup")
    assert p.returncode == 2 and "auth_store" in p.stderr
    p = subprocess.run([PYTHON, str(AGENT), "list", "--bot", "../x", "--config-dir", str(bot.cfg_dir)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 2


def test_runs_zipped_from_stdin(bot: Bot) -> None:
    """As the controller streams it to a host without the agent: the package zipped on stdin."""
    p = subprocess.run(["sh", "-c", stream_command(["facts", "--config-dir", str(bot.cfg_dir), "--json"])],
                       input=agent_zip(), capture_output=True, timeout=30, check=False,
                       env={"PATH": os.environ["PATH"]})  # no PYTHONPATH: only the zip has the package
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == 1 and doc["bots"][0]["bot"] == "shop"


def test_restore_failing_midway_leaves_the_old_folder(bot: Bot, bot_home: Path) -> None:
    """Extraction runs out of space half way: the live folder is untouched, the temp sibling gone."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = bot_home / "small"  # the bot user's state dir on a small disk
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512k,mode=0700,uid={BOT_UID},gid={BOT_UID}", "tmpfs",
                       str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        bot.write_config(auth_dir=str(mnt / "auth"))
        bot.populate(prekeys=0)
        for i in range(30):
            (bot.auth / f"session-{i}.0.json").write_bytes(os.urandom(12_000))
        r = bot.backup()
        before = snapshot(bot.auth)
        p = bot.run("restore", r["id"])
        assert p.returncode == 1 and "auth folder unchanged" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert snapshot(bot.auth) == before
        assert sorted(os.listdir(mnt)) == ["auth"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_min_interval_rate_limits_backups_the_bot_asks_for(bot: Bot) -> None:
    """The bot's keep-alive socket runs `backup --reason keepalive --prune --min-interval 3600`: a bot that
    asks again and again must not rotate the older good backups out with fresh ones."""
    cron = bot.backup("cron")
    first = bot.json("backup", "--reason", "keepalive", "--prune", "--min-interval", "3600")["results"][0]
    assert first["ok"] and first["verified"] and not first.get("skipped")
    for _ in range(3):
        again = bot.json("backup", "--reason", "keepalive", "--prune", "--min-interval", "3600")["results"][0]
        assert again["ok"] and again["skipped"] and again["id"] == first["id"], again
        assert "minimum interval 3600 s" in again["why"]
    listed = [b["id"] for b in bot.json("list")["results"][0]["backups"]]
    assert sorted(listed) == sorted([cron["id"], first["id"]])
    # Without the option nothing is skipped (cron, repairs and people are never rate limited).
    assert not bot.json("backup", "--reason", "keepalive")["results"][0].get("skipped")
    human = bot.run("backup", "--reason", "keepalive", "--min-interval", "3600", check=True).stdout
    assert "backup skipped: a keepalive backup is" in human
