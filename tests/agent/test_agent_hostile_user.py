"""The bot's unix user is the adversary. Each test plays it as a real unprivileged uid (`nobody`, the
tests' bot user): links, FIFOs and swapped folders at the paths root touches, held locks, leftovers of
killed runs, oversized manifests. Root must never read, write or chown anything through them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AGENT, BOT_UID, PYTHON, Bot, give_to_bot, snapshot
from test_agent_hostile import craft_backup, reg

from waops_host.base import DEFAULT_LOCK_DIR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays the bot user with a real uid: needs root")
SECRET = f"root-only-{secrets.token_hex(8)}"


def as_bot_user(fn: Callable[[], Any], wait: bool = True) -> int:
    """Run fn in a child that is the bot user (uid/gid 65534, no groups), as the bot's own code would.
    wait=False returns the pid of a child that keeps running (a held lock, a swapping loop)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(BOT_UID, BOT_UID, BOT_UID)
            os.setresuid(BOT_UID, BOT_UID, BOT_UID)
            fn()
        except BaseException as e:
            os.write(2, f"bot user: {e!r}\n".encode())
            code = 1
        os._exit(code)
    if not wait:
        return pid
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the bot user's step failed"
    return pid


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.fixture
def root_secret(bot_home: Path) -> Path:
    """A root-only file the bot user can name (its parent is traversable) but not read."""
    d = bot_home / "root-only"
    d.mkdir(mode=0o700)
    f = d / "alerts.json"
    f.write_text(json.dumps({"connection": "open", "telegram": {"token": SECRET}}))
    f.chmod(0o600)
    return f


def everything_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink())


def old_layout(bot: Bot) -> None:
    """Backups as an older role left them: the backup dir and its sets owned by the bot user."""
    for p in [bot.backups, *bot.backups.rglob("*")]:
        os.chown(p, BOT_UID, BOT_UID, follow_symlinks=False)


def test_links_at_verify_tmp_names_never_redirect_root_writes(bot: Bot, bot_home: Path, root_secret: Path) -> None:
    """verify.json's tmp name in a bot-writable backup dir: a planted link made root overwrite a root
    0600 file with JSON and chown it to the bot user."""
    bot.write_config(backup_dir=str(bot_home / "backups"))  # under a 0711 dir, as /var/backups/waops is
    bid = bot.backup()["id"]
    old_layout(bot)
    d = bot.backups / bid
    before = root_secret.read_bytes()
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())

    def plant() -> None:
        for pid in range(last, last + 4000):  # the agent's next pid is among these
            os.symlink(root_secret, d / f"verify.json.tmp-{pid}")

    as_bot_user(plant)
    bot.run("verify")
    assert root_secret.read_bytes() == before
    st = root_secret.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)


def test_auth_folder_swapped_for_a_link_to_root_files_is_not_backed_up(bot: Bot, root_secret: Path) -> None:
    """The bot user replaces its auth folder with a link to a root-only directory, then asks for a backup
    (as it can through the keep-alive socket): nothing of that directory may end up in a backup."""
    auth = bot.auth

    def swap() -> None:
        auth.rename(auth.with_name("auth.real"))
        auth.symlink_to(root_secret.parent)

    as_bot_user(swap)
    bot.run("backup", "--reason", "keepalive")
    assert SECRET.encode() not in everything_under(bot.backups)
    assert not [p for p in bot.backups.rglob("*") if p.stat().st_uid == BOT_UID]


def test_health_file_linked_to_a_root_file_does_not_leak_into_facts(bot: Bot, root_secret: Path) -> None:
    health = Path(bot.config["health_file"])
    as_bot_user(lambda: health.symlink_to(root_secret))
    p = bot.run("facts", "--json")
    assert p.returncode == 0, p.stderr
    assert SECRET not in p.stdout
    assert json.loads(p.stdout)["bots"][0]["health"] == {"error": "unreadable health file: OSError"}


def test_pm2_log_path_and_creds_linked_to_root_files_do_not_leak(bot: Bot, root_secret: Path) -> None:
    """pm2's log paths come from the bot user's daemon, creds.json is the bot's: both read as the bot."""
    logs = bot.auth.parent / "logs"

    def plant() -> None:
        logs.mkdir()
        (logs / "out.log").symlink_to(root_secret)
        (bot.auth / "creds.json").unlink()
        (bot.auth / "creds.json").symlink_to(root_secret)

    as_bot_user(plant)
    bot.write_config(log_files={"out": str(logs / "out.log")})
    p = bot.run("facts", "--json")
    assert p.returncode == 0, p.stderr
    assert SECRET not in p.stdout


def test_a_lock_held_by_the_bot_user_cannot_block_root(bot: Bot) -> None:
    """With the default lock location, another user can neither create nor hold root's lock: the old
    world-writable /run/lock let the bot user hold it and root's backup exit 75."""
    name = f"h{secrets.token_hex(4)}"  # a bot name of our own in the host's real lock directories
    bot.write_config(name=name)
    (bot.cfg_dir / "shop.json").rename(bot.cfg_dir / f"{name}.json")
    cmd = [PYTHON, str(AGENT), "backup", "--bot", name, "--config-dir", str(bot.cfg_dir), "--lock-wait", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("WAOPS_LOCK_DIR", "WAOPS_LOCK_WAIT")}
    lock_dirs = {DEFAULT_LOCK_DIR, "/run/lock"}
    held: list[int] = []

    def hold(lock: Path) -> None:
        import fcntl

        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        time.sleep(600)

    try:
        for d in lock_dirs:
            lock = Path(d) / f"waops-{name}.lock"
            held.append(as_bot_user(lambda lock=lock: hold(lock), wait=False))
        time.sleep(0.5)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
    finally:
        for pid in held:
            stop(pid)
        for d in lock_dirs:
            with contextlib.suppress(OSError):
                (Path(d) / f"waops-{name}.lock").unlink()
    st = os.lstat(DEFAULT_LOCK_DIR)
    assert st.st_uid == 0 and not st.st_mode & 0o022


@pytest.mark.parametrize("kind", ["world_writable", "symlink", "bot_owned"])
def test_a_lock_dir_others_can_change_is_refused(bot: Bot, tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real-locks"
    real.mkdir(mode=0o700)
    if kind == "world_writable":
        bot.lock_dir.mkdir()
        bot.lock_dir.chmod(0o1777)
    elif kind == "symlink":
        bot.lock_dir.symlink_to(real)
    else:
        bot.lock_dir.mkdir()
        os.chown(bot.lock_dir, BOT_UID, BOT_UID)
    p = bot.run("backup")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "refusing to use it" in p.stderr and "Traceback" not in p.stderr
    assert not list(real.iterdir()) and not bot.backups.exists()


def test_leftover_verify_tmp_does_not_make_a_backup_unverifiable(bot: Bot) -> None:
    """A 0-byte verify.json.tmp-<pid> (a verify that hit a full disk) must not fail every later verify."""
    bid = bot.backup()["id"]
    (bot.backups / bid / "verify.json.tmp-4242").write_bytes(b"")
    r = bot.json("verify")["results"][0]
    assert r["ok"], r
    assert [b["verified"] for b in bot.listing()] == [True]
    assert sorted(p.name for p in (bot.backups / bid).iterdir()) == ["auth.tar", "manifest.json", "verify.json"]


def test_retention_keeps_the_newest_linked_backup_even_unverified(bot: Bot) -> None:
    """After a logout every new backup holds unlinked creds; the last linked one, even when its verify
    mark is missing or failed, is what a restore needs: prune must keep it."""
    linked = bot.backup("cron")["id"]
    (bot.backups / linked / "verify.json").write_text(json.dumps({"ok": False, "errors": ["disk full"]}))
    (bot.auth / "creds.json").write_text("{}")
    later = [bot.backup("cron")["id"] for _ in range(4)]
    bot.json("prune", "--keep", "3")
    assert linked in [b["id"] for b in bot.listing()]
    assert len(bot.listing()) == 4 and later[0] not in [b["id"] for b in bot.listing()]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_verify_on_a_full_disk_fails_and_recovers_when_space_returns(bot: Bot, small_disk: Path) -> None:
    """verify with the backup disk full: the command fails (it could not record its result), leaves no
    tmp file, and once space returns the backups verify again."""
    bot.populate(prekeys=3)
    bot.write_config(backup_dir=str(small_disk / "backups"))
    bid = bot.backup()["id"]
    filler = fill(small_disk)
    p = bot.run("verify")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert sorted(x.name for x in (small_disk / "backups" / bid).iterdir() if "tmp" in x.name) == []
    filler.unlink()
    assert bot.json("verify")["ok"]
    assert [b["verified"] for b in bot.listing()] == [True]


def test_a_restore_killed_between_the_renames_is_rolled_back_at_the_next_run(bot: Bot) -> None:
    """Killed between its two renames, a restore leaves no auth folder, `.auth.old-*` and a staged
    `.auth.restore-*`; the next locked run (here the cron backup) puts the old folder back and cleans."""
    before = snapshot(bot.auth)
    parent = bot.auth.parent
    bot.auth.rename(parent / ".auth.old-4242-abcdef")
    (parent / ".auth.restore-4242-fedcba").mkdir()
    (parent / ".auth.restore-4242-fedcba" / "creds.json").write_text("{half")
    give_to_bot(parent)
    r = bot.backup("cron")
    assert r["ok"] and r["creds_linked"], r
    assert snapshot(bot.auth) == before
    assert sorted(p.name for p in parent.iterdir()) == ["auth"]


def test_bad_values_give_one_line_and_exit_2(bot: Bot) -> None:
    ids = [bot.backup()["id"] for _ in range(2)]
    for args, env in ((["prune", "--keep", "-1", "--dry-run"], {}), (["prune", "--keep", "-1"], {}),
                      (["list"], {"WAOPS_LOCK_WAIT": "abc"})):
        p = bot.run(*args, env=env)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
        assert "Traceback" not in p.stderr
    assert sorted(b["id"] for b in bot.listing()) == sorted(ids)
    bot.write_config(prune_keys={"prekeys_keep": "many"})
    p = bot.run("prune-keys", "--dry-run")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "prekeys_keep" in p.stderr, p.stderr


@pytest.mark.parametrize("name", ["session-a\nb.json", "pre-key-\r1.json", "x\x1b[2J.json", "del\x7f.json"])
def test_member_names_with_control_characters_are_refused(bot: Bot, name: str) -> None:
    craft_backup(bot, "20260101T000000Z-manual-aaaaaa", [reg("creds.json"), reg(name)])
    before = snapshot(bot.auth)
    p = bot.run("restore", "20260101T000000Z-manual-aaaaaa")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert snapshot(bot.auth) == before


# Peak RSS of a command, measured by a small fresh parent: Linux carries a process's high-water mark
# across exec, so a child forked straight from pytest would report pytest's own size.
_RSS = ("import os, sys\npid = os.fork()\nif pid == 0:\n    fd = os.open(os.devnull, os.O_WRONLY)\n"
        "    os.dup2(fd, 1)\n    os.dup2(fd, 2)\n    os.execv(sys.argv[1], sys.argv[1:])\n"
        "_, status, usage = os.wait4(pid, 0)\nprint(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def _rss_of(cmd: list[str]) -> tuple[int, int]:
    """(peak RSS in KiB, exit code) of one command."""
    out = subprocess.run([PYTHON, "-c", _RSS, *cmd], capture_output=True, text=True, timeout=120, check=True)
    rc, rss = map(int, out.stdout.split())
    return rss, rc


def test_a_huge_manifest_costs_little_memory(bot: Bot) -> None:
    """A 29 MB manifest without a verify mark: `list` (facts and check list too) reads only its head."""
    bid = "20260101T000000Z-manual-bbbbbb"
    d = craft_backup(bot, bid, [reg("creds.json")])
    text = (d / "manifest.json").read_text()
    cut = text.index('"entries": {') + len('"entries": {')
    with (d / "manifest.json").open("w") as f:  # written in pieces: the test itself stays small
        f.write(text[:cut])
        for i in range(290_000):
            f.write(f'"pre-key-{i}.json": {{"sha256": "{"0" * 64}", "size": {i}}}, ')
        f.write(text[cut:])
    assert (d / "manifest.json").stat().st_size > 28 << 20
    base = [PYTHON, str(AGENT), "--bot", "shop", "--config-dir", str(bot.cfg_dir), "--lock-dir", str(bot.lock_dir)]
    rss, rc = _rss_of([base[0], base[1], "list", *base[2:]])
    assert rc == 0 and rss < 80 * 1024, f"list: {rss} KiB"
    assert [b["id"] for b in bot.listing()] == [bid]
    rss, rc = _rss_of([base[0], base[1], "facts", *base[2:]])
    assert rc == 0 and rss < 80 * 1024, f"facts: {rss} KiB"
    # verify parses the whole manifest, up to a bound: this one is refused
    rss, rc = _rss_of([base[0], base[1], "verify", *base[2:]])
    assert rc == 1 and rss < 80 * 1024, f"verify: {rss} KiB"


def test_auth_folder_swapped_back_and_forth_while_root_backs_up(bot: Bot, root_secret: Path) -> None:
    """A race: the bot user swaps its auth folder for a link to root's files and back, in a tight loop,
    while root backs up. Whatever root sees at any moment, no root byte reaches a backup."""
    auth, real = bot.auth, bot.auth.with_name("auth.real")
    link = bot.auth.with_name("auth.link")

    def swapper() -> None:
        link.symlink_to(root_secret.parent)
        while True:
            os.rename(auth, real)
            os.rename(link, auth)
            os.rename(auth, link)
            os.rename(real, auth)

    pid = as_bot_user(swapper, wait=False)
    try:
        for _ in range(8):
            bot.run("backup")
    finally:
        stop(pid)
    assert SECRET.encode() not in everything_under(bot.backups)


def test_fifos_at_the_bot_paths_root_reads_never_hang(bot: Bot) -> None:
    """FIFOs in place of the health file, creds.json, a key file, pm2's pid file and the release's
    package.json: facts, backup and prune-keys finish."""
    def plant() -> None:
        os.mkfifo(bot.config["health_file"])
        (bot.auth / "creds.json").unlink()
        os.mkfifo(bot.auth / "creds.json")
        os.mkfifo(bot.auth / "session-fifo.0.json")
        os.mkfifo(Path(bot.config["pm2_home"]) / "pm2.pid")

    Path(bot.config["pm2_home"]).mkdir()
    give_to_bot(Path(bot.config["pm2_home"]))
    as_bot_user(plant)
    pkg = Path(bot.config["release_root"]) / "current" / "node_modules" / "baileys"
    pkg.mkdir(parents=True)
    os.mkfifo(pkg / "package.json")
    give_to_bot(Path(bot.config["release_root"]).parent)
    for args in (["facts", "--json"], ["backup"], ["prune-keys", "--sessions", "broken"]):
        p = bot.run(*args, timeout=60)
        assert p.returncode in (0, 1) and "Traceback" not in p.stderr, (args, p.stderr)


def test_restore_writes_only_as_the_bot_user(bot: Bot, root_secret: Path) -> None:
    """While root restores, the bot user plants a link where the staging folder's parent is: every file
    the restore writes is the bot user's, and nothing is written through the link."""
    r = bot.backup()
    target = root_secret.parent
    before = sorted(p.name for p in target.iterdir())
    shutil.rmtree(bot.auth)
    as_bot_user(lambda: bot.auth.symlink_to(target))
    bot.run("restore", r["id"])
    assert sorted(p.name for p in target.iterdir()) == before
    owners = {p.lstat().st_uid for p in bot.auth.parent.rglob("*")}
    assert owners == {BOT_UID}


def test_an_old_bot_owned_backup_dir_is_taken_over_without_following_anything(
        bot: Bot, bot_home: Path, root_secret: Path) -> None:
    """A backup dir an older role gave the bot user: the agent makes it root's, removing (never chowning)
    links, a hard link to a root file (possible where protected_hardlinks is off) and nested folders."""
    bot.write_config(backup_dir=str(bot_home / "backups"))
    bid = bot.backup()["id"]
    d = bot.backups / bid
    old_layout(bot)
    os.link(root_secret, d / "hard.json")  # made by root here: protected_hardlinks stops the bot user

    def plant() -> None:
        (d / "link.json").symlink_to(root_secret)
        (d / "nested" / "deeper").mkdir(parents=True)
        os.mkfifo(d / "fifo")

    as_bot_user(plant)
    listed = bot.listing()
    assert [b["id"] for b in listed] == [bid]
    assert sorted(p.name for p in d.iterdir()) == ["auth.tar", "manifest.json", "verify.json"]
    assert {(p.stat().st_uid, p.stat().st_mode & 0o777) for p in d.iterdir()} == {(0, 0o600)}
    assert [(p.stat().st_uid, p.stat().st_mode & 0o777) for p in (bot.backups, d)] == [(0, 0o700)] * 2
    st = root_secret.stat()
    assert (st.st_uid, st.st_mode & 0o777, st.st_nlink) == (0, 0o600, 1)
    assert bot.json("verify")["ok"]
