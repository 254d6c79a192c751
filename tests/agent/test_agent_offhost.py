"""Off-host copies: a real restic repository (local path, or an SFTP one that does not answer) behind
the agent's backup, facts, check and metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from agent_helpers import Bot, snapshot

pytestmark = pytest.mark.skipif(not shutil.which("restic"), reason="restic is not installed")
PASSWORD = "correct-horse-battery-staple-h8"


def use_repo(bot: Bot, repo: str, tmp_path: Path, **extra: object) -> Path:
    pw = tmp_path / f"restic-{bot.name}.pass"
    if not pw.exists():
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
    bot.write_config(offhost={"repository": repo, "password_file": str(pw), **extra})
    return pw


def init_repo(bot: Bot, tmp_path: Path, **extra: object) -> Path:
    repo = tmp_path / "repo"
    use_repo(bot, str(repo), tmp_path, **extra)
    assert bot.json("offhost", "init")["results"][0]["created"] is True
    assert bot.json("offhost", "init")["results"][0]["created"] is False  # idempotent
    return repo


def remote(bot: Bot) -> list[dict[str, object]]:
    return bot.json("offhost", "list")["results"][0]["backups"]


def test_verified_backup_goes_off_host_and_comes_back(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    r = bot.backup()
    assert r["ok"] and r["offhost"]["ok"] and r["offhost"]["id"] == r["id"]
    copies = remote(bot)
    assert [c["id"] for c in copies] == [r["id"]] and copies[0]["verified"] and copies[0]["creds_linked"]
    facts = json.loads(bot.run("facts", "--json", check=True).stdout)["bots"][0]["offhost"]
    assert facts["last_backup_id"] == r["id"] and facts["last_error"] is None and 0 <= facts["age_s"] < 120
    assert str(tmp_path / "repo") == facts["repository"]
    # the host is gone: only the repository is left; fetch brings the set back, restore takes it
    before = snapshot(bot.auth)
    shutil.rmtree(bot.backups)
    shutil.rmtree(bot.auth)
    got = bot.json("offhost", "fetch")["results"][0]
    assert got["id"] == r["id"] and got["verified"]
    bot.json("restore", "--latest-verified")
    assert snapshot(bot.auth) == before


def test_password_never_on_a_command_line(bot: Bot, tmp_path: Path) -> None:
    seen = tmp_path / "argv.log"
    wrapper = tmp_path / "restic-wrapper"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{seen}\nenv >>{seen}\nexec restic "$@"\n')
    wrapper.chmod(0o700)
    init_repo(bot, tmp_path, restic=str(wrapper))
    assert bot.backup()["offhost"]["ok"]
    text = seen.read_text()
    assert "RESTIC_PASSWORD_FILE=" in text and PASSWORD not in text
    assert PASSWORD not in (bot.cfg_dir / "shop.json").read_text()


def test_remote_retention_follows_the_local_rules(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path, keep=2)
    pre_reset = bot.backup("pre-reset")["id"]
    linked = bot.backup()["id"]
    creds = json.loads((bot.auth / "creds.json").read_text())
    creds.pop("me")
    (bot.auth / "creds.json").write_text(json.dumps(creds))  # logged out: newer sets hold no linked creds
    later = [bot.backup()["id"] for _ in range(3)]
    assert {c["id"] for c in remote(bot)} == {linked, pre_reset, *later[-2:]}


def test_bad_password_file_is_refused(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    (tmp_path / "restic-shop.pass").chmod(0o644)
    p = bot.run("backup")
    assert p.returncode == 1 and "mode 0600" in p.stderr and "Traceback" not in p.stderr
    assert len(bot.listing()) == 1 and bot.listing()[0]["verified"]


def test_other_bots_password_cannot_open_the_repository(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    assert bot.backup()["offhost"]["ok"]
    other = tmp_path / "other.pass"
    other.write_text("another bot's password\n")
    other.chmod(0o600)
    bot.write_config(offhost={**bot.config["offhost"], "password_file": str(other)})
    p = bot.run("offhost", "list")
    assert p.returncode == 1 and "wrong password" in p.stderr.lower(), p.stderr


def assert_failed_loudly(bot: Bot, p: subprocess.CompletedProcess[str], tmp_path: Path, why: str) -> None:
    assert p.returncode == 1, p.stderr
    assert "off-host copy failed (local backups kept)" in p.stderr and why in p.stderr.lower(), p.stderr
    assert "Traceback" not in p.stderr and PASSWORD not in p.stderr + p.stdout
    local = bot.listing()
    assert local and all(b["verified"] for b in local)
    assert bot.json("verify")["ok"]
    # the check raises the alert and the metrics carry the failure
    state, metrics = tmp_path / "state", tmp_path / "waops.prom"
    state.mkdir(exist_ok=True)
    c = bot.run("check", "--json", "--state-dir", str(state), "--metrics-file", str(metrics))
    res = json.loads(c.stdout)["results"][0]
    assert c.returncode == 1 and "offhost_failed" in res["active"], c.stdout
    assert 'waops_offhost_last_ok{bot="shop"} 0' in metrics.read_text()


def test_unreachable_repository_fails_the_backup_loudly(bot: Bot, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    # an SFTP server that turns us away: no key it accepts (batch mode), no known host key
    use_repo(bot, "sftp:backup@127.0.0.1:/srv/restic/shop", tmp_path, ssh_known_hosts=str(kh), timeout_s=60)
    p = bot.run("backup")
    assert_failed_loudly(bot, p, tmp_path, "off-host copy failed")


def test_full_repository_fails_the_backup_loudly(bot: Bot, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        use_repo(bot, str(mnt / "repo"), tmp_path)
        bot.json("offhost", "init")
        assert bot.backup()["offhost"]["ok"]
        (bot.auth / "big.bin").write_bytes(os.urandom(2 << 20))
        assert_failed_loudly(bot, bot.run("backup"), tmp_path, "no space left")
        assert len(bot.listing()) == 2
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def corrupt_packs(repo: Path) -> int:
    n = 0
    for pack in (repo / "data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
            n += 1
    return n


def test_corrupt_pack_fails_the_check_and_the_next_backup(bot: Bot, tmp_path: Path) -> None:
    repo = init_repo(bot, tmp_path, check_subset="100%")
    assert bot.backup()["offhost"]["ok"]
    assert bot.json("offhost", "check")["ok"]
    assert corrupt_packs(repo) > 0
    p = bot.run("offhost", "check", "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["results"][0]["ok"] is False
    assert_failed_loudly(bot, bot.run("backup"), tmp_path, "off-host copy")
    facts = json.loads(bot.run("facts", "--json", check=True).stdout)["bots"][0]["offhost"]
    assert facts["check"]["ok"] is False and facts["last_error"]


def test_stale_copy_alerts_with_its_age(bot: Bot, tmp_path: Path) -> None:
    init_repo(bot, tmp_path)
    bot.write_config(alerts={"offhost_max_age_hours": 7, "quiet_hours": ""})
    created = bot.backup()["offhost"]
    assert created["ok"]
    state, metrics = tmp_path / "state", tmp_path / "waops.prom"
    state.mkdir()
    base = ["check", "--json", "--state-dir", str(state), "--metrics-file", str(metrics)]
    fresh = json.loads(bot.run(*base).stdout)["results"][0]
    assert "offhost_stale" not in fresh["active"]
    later = (bot.listing()[0]["created_at"]).replace("Z", "+00:00")
    when = (datetime.fromisoformat(later) + timedelta(hours=8)).isoformat()
    old = json.loads(bot.run(*base, "--now", when).stdout)["results"][0]
    assert "offhost_stale" in old["active"] and any("off-host copy older than 7 h" in e for e in old["events"])
    assert 'waops_offhost_newest_age_seconds{bot="shop"}' in metrics.read_text()


def test_credentials_in_a_repository_url_are_never_printed(bot: Bot, tmp_path: Path) -> None:
    use_repo(bot, "rest:http://shop:s3cr3t-rest-pw@127.0.0.1:9/shop", tmp_path, timeout_s=60)
    p = bot.run("backup", "--json")
    assert p.returncode == 1 and "s3cr3t-rest-pw" not in p.stderr + p.stdout, p.stderr
    assert "***@" in p.stderr
    facts = bot.run("facts", "--json", check=True).stdout
    assert "s3cr3t-rest-pw" not in facts and "rest:http://***@127.0.0.1:9/shop" in facts


def test_env_file_reaches_restic_only_when_it_is_roots_0600(bot: Bot, tmp_path: Path) -> None:
    seen = tmp_path / "env.log"
    wrapper = tmp_path / "restic-wrapper"
    wrapper.write_text(f'#!/bin/sh\nenv >>{seen}\nexec restic "$@"\n')
    wrapper.chmod(0o700)
    env = tmp_path / "restic.env"
    env.write_text("# S3 keys\nAWS_ACCESS_KEY_ID=AKIDEXAMPLE\nRESTIC_PASSWORD=not-taken\n")
    env.chmod(0o600)
    init_repo(bot, tmp_path, restic=str(wrapper), env_file=str(env))
    text = seen.read_text()
    assert "AWS_ACCESS_KEY_ID=AKIDEXAMPLE" in text and "RESTIC_PASSWORD=not-taken" not in text
    env.chmod(0o640)
    p = bot.run("offhost", "list")
    assert p.returncode == 2 and "mode 0600" in p.stderr and len(p.stderr.strip().splitlines()) == 1
