"""`waops-host facts`: the Facts JSON of docs/CONTRACTS.md on a pm2-less host, with big and broken logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Bot

from waops.diagnose import diagnose_log, records_from_logs

WINDOW = 65536


def facts(bot: Bot) -> dict[str, Any]:
    doc = bot.json("facts")
    assert doc["schema"] == 1 and doc["agent_version"] and doc["collected_at"].endswith("Z")
    (b,) = doc["bots"]
    assert b["bot"] == "shop"
    return b


def pm2_logs(bot: Bot) -> tuple[Path, Path]:
    d = Path(bot.config["pm2_home"]) / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / "shop-out.log", d / "shop-error.log"


END_OUT = [
    '{"level":30,"time":1763796000000,"pid":7,"class":"baileys","msg":"connected to WA"}',
    '{"level":30,"time":"2025-11-22T07:20:01.500Z","class":"baileys","msg":"connection closed",'
    '"err":{"output":{"statusCode":401}},"trace":"Stream Errored (conflict) device_removed"}',
    "2025-11-22T07:20:02: Device Logged Out, Please Scan Again And Run.",
]
END_ERR = ["Session error:Error: Bad MAC Error: Bad MAC", "    at Object.verifyMAC (crypto.js:10:11)"]


def test_facts_on_pm2_less_host_with_a_50mb_log(bot: Bot) -> None:
    out, err = pm2_logs(bot)
    filler = ('{"level":30,"time":1763790000000,"msg":"recv message","id":"' + "x" * 120 + '"}\n').encode()
    with out.open("wb") as f:
        block = filler * 4096
        while f.tell() < 50 << 20:
            f.write(block)
        f.write(("\n".join(END_OUT) + "\n").encode())
    with err.open("wb") as f:  # sparse: 50 MB of hole, then the real lines
        f.truncate(50 << 20)
        f.seek(50 << 20)
        f.write(("\n".join(END_ERR) + "\n").encode())
    b = facts(bot)  # bounded: what it reads is asserted below (bytes_read), never how long it took
    assert b["process"]["manager"] == "pm2" and b["process"]["status"] in ("missing", "stopped")
    logs = b["logs"]
    assert logs["source"] == "pm2" and logs["window_bytes"] == WINDOW
    assert logs["bytes_read"] <= 2 * WINDOW
    # raw lines, the newest of each stream, bounded; the controller's reader makes sense of them
    out_lines, err_lines = logs["streams"]["out"], logs["streams"]["err"]
    assert out_lines[-3:] == END_OUT and err_lines[-2:] == END_ERR
    for lines in (out_lines, err_lines):
        assert sum(len(x.encode()) + 1 for x in lines) <= logs["ship_bytes"]
    recs = records_from_logs(logs)
    (closed,) = [r for r in recs if r.code == 401 and r.source == "pino"]
    assert closed.time == "2025-11-22T07:20:01.500Z" and closed.stream == "out"
    (mac,) = [r for r in recs if "Bad MAC" in r.text]
    assert mac.stream == "err" and "verifyMAC" in mac.raw  # the stack frame joined its record
    d = diagnose_log(recs)
    assert (d.cause, d.code) == ("logged_out", 401)


def test_garbage_and_endless_lines_do_not_break_facts(bot: Bot) -> None:
    out, err = pm2_logs(bot)
    out.write_bytes(os.urandom(300_000) + b"\xff\xfe\x00\xc3\x28 Stream Errored (restart required)\n")
    err.write_bytes(b"A" * 5_000_000)  # one line, no newline, bigger than the window
    b = facts(bot)
    logs = b["logs"]
    assert all(len(x) <= 4000 for lines in logs["streams"].values() for x in lines)
    assert any(r.code == 515 for r in records_from_logs(logs))
    json.dumps(b)  # nothing unserialisable


def test_log_truncated_while_read(bot: Bot) -> None:
    out, _ = pm2_logs(bot)
    stop = threading.Event()

    def churn() -> None:  # pm2-logrotate copies then truncates; emulate it in a loop
        while not stop.is_set():
            out.write_bytes(b'{"level":50,"msg":"stream errored out"}\n' * 20000)
            with out.open("r+b") as f:
                f.truncate(0)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(8):
            facts(bot)
    finally:
        stop.set()
        t.join()


def test_auth_backups_library_health_disk(bot: Bot) -> None:
    rel = Path(bot.config["release_root"])
    for r, v in (("20261120T000000Z", "6.7.17"), ("20261122T071500Z", "6.7.20")):
        pkg = rel / "releases" / r / "node_modules" / "baileys"
        pkg.mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({"name": "baileys", "version": v}))
    (rel / "current").symlink_to("releases/20261122T071500Z")
    Path(bot.config["health_file"]).write_text(json.dumps({
        "schema": 1, "bot": "shop", "connection": "open", "last_disconnect": None,
        "updated_at": "2026-01-01T00:00:00Z"}))
    bot.backup("cron")
    b = facts(bot)
    auth = b["auth"]
    assert auth["store"] == "files" and auth["file_count"] == 34
    assert auth["by_type"] == {"app-state-sync-key": 1, "creds": 1, "pre-key": 30, "sender-key-memory": 1,
                               "session": 1}
    assert auth["creds"]["present"] and auth["creds"]["parses"] and auth["creds"]["linked"]
    assert auth["creds"]["me_id"].startswith("15550100001") and auth["db"] is None
    assert b["backups"]["count"] == 1
    latest = b["backups"]["latest"]
    assert latest["reason"] == "cron" and latest["verified"] and latest["creds_linked"] and latest["age_s"] < 60
    lib = b["library"]
    assert lib == {"package": "baileys", "installed": "6.7.20", "expected": "6.7.18", "known_bad": True,
                   "release": "20261122T071500Z", "previous_release": "20261120T000000Z"}
    assert b["health"]["connection"] == "open" and b["health"]["age_s"] > 3600
    assert b["disk"]["free_bytes"] > 0 and 0 <= b["disk"]["free_pct"] <= 100
    assert b["node"]["version"] is None or b["node"]["version"].startswith("v")


def test_unparseable_creds_and_missing_auth(bot: Bot) -> None:
    (bot.auth / "creds.json").write_text('{"me": {"id": "1@s.whatsapp')
    c = facts(bot)["auth"]["creds"]
    assert c["present"] and not c["parses"] and not c["linked"]
    for p in bot.auth.iterdir():
        p.unlink()
    bot.auth.rmdir()
    a = facts(bot)["auth"]
    assert a["file_count"] == 0 and a["exists"] is False and not a["creds"]["present"]


def test_postgres_down_is_reported_not_a_crash(pgbot: Bot) -> None:
    ok = facts(pgbot)["auth"]["db"]
    assert ok["reachable"] and ok["rows"] == 202 and ok["by_type"]["pre-key"] == 200 and ok["creds"]["linked"]
    cfg = dict(pgbot.config["postgres"], port=1)
    pgbot.write_config(postgres=cfg)
    db = facts(pgbot)["auth"]["db"]
    assert db["reachable"] is False and db["error"]


def test_instances_counts_processes_on_the_same_auth_dir(bot: Bot) -> None:
    env = {**os.environ, "WAOPS_AUTH_DIR": str(bot.auth), "WAOPS_BOT": "shop"}
    # a wrapper shell and its child are one instance; a second one is a duplicate socket
    procs = [subprocess.Popen(["sh", "-c", "sleep 30 & wait"], env=env, start_new_session=True)
             for _ in range(2)]
    try:
        time.sleep(0.3)
        assert facts(bot)["process"]["instances"] == 2
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert facts(bot)["process"]["instances"] == 0


def test_facts_on_a_bloated_folder_with_backups(bot: Bot) -> None:
    # how long this takes is bench_diagnose's figure, never an assertion here
    bot.populate(prekeys=800)
    for _ in range(3):
        bot.backup("cron")
    b = facts(bot)
    assert b["auth"]["by_type"]["pre-key"] == 800 and b["backups"]["count"] == 3


def test_real_pm2_when_available(bot: Bot, tmp_path: Path) -> None:
    """Against a real pm2 daemon (pm2 on PATH, or WAOPS_TEST_PM2_BIN=/path/to/pm2)."""
    pm2 = os.environ.get("WAOPS_TEST_PM2_BIN") or shutil.which("pm2")
    if not pm2 or os.geteuid() != 0:
        pytest.skip("pm2 not installed (set WAOPS_TEST_PM2_BIN) or not root")
    app = tmp_path / "app.js"
    app.write_text(
        'console.log(JSON.stringify({level:30,time:Date.now(),msg:"connection closed",'
        'err:{output:{statusCode:440}}}));\nconsole.error("Session error:Error: Bad MAC Error: Bad MAC");\n'
        "setInterval(() => {}, 1000);\n")
    env = {**os.environ, "PM2_HOME": bot.config["pm2_home"], "WAOPS_AUTH_DIR": str(bot.auth),
           "PATH": f"{Path(pm2).parent}:{os.environ['PATH']}"}
    bot.write_config(user="root")
    subprocess.run([pm2, "start", str(app), "--name", "shop", "--time"], env=env, check=True,
                   capture_output=True, timeout=60)
    try:
        time.sleep(1.0)
        doc = bot.run("facts", "--json", env={"PATH": env["PATH"]})
        b = json.loads(doc.stdout)["bots"][0]
        assert b["process"]["status"] == "online" and b["process"]["instances"] == 1
        assert b["process"]["uptime_s"] is not None and b["process"]["pid"]
        recs = records_from_logs(b["logs"])
        assert 440 in [r.code for r in recs] and any("Bad MAC" in r.text for r in recs)
    finally:
        subprocess.run([pm2, "kill"], env=env, capture_output=True, timeout=60, check=False)


def test_a_fifo_for_health_file_or_log_is_refused_not_waited_on(bot: Bot, bot_home: Path) -> None:
    """The health file and the logs are where the bot user writes: a FIFO put there (or a link to one)
    must not block root's facts or check in open()/read() with no writer."""
    health = Path(bot.config["health_file"])
    health.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(health)
    tmp_path = bot_home
    os.mkfifo(tmp_path / "out.fifo")
    (tmp_path / "err.log").symlink_to(tmp_path / "out.fifo")
    bot.write_config(log_files={"out": str(tmp_path / "out.fifo"), "err": str(tmp_path / "err.log")})
    p = bot.run("facts", "--json", timeout=30)
    assert p.returncode == 0, p.stderr
    (b,) = json.loads(p.stdout)["bots"]
    assert b["health"] == {"error": "unreadable health file: OSError"}
    assert set(b["logs"]["errors"]) == {"out", "err"} and "not a regular file" in b["logs"]["errors"]["out"]


def test_one_bot_user_child_per_bot_gives_the_facts_of_a_child_per_read(bot: Bot, monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    """The reads a bot's facts make as the bot user run in one child, ahead; the document is the one a
    child per read gives (the health file, both log streams, auth folder, library)."""
    import contextlib

    from waops_host import facts as agent_facts
    from waops_host import privdrop
    from waops_host.config import load_configs

    out, err = pm2_logs(bot)
    out.write_text("\n".join(END_OUT) + "\n")
    err.write_text("\n".join(END_ERR) + "\n")
    Path(bot.config["health_file"]).write_text(json.dumps({"schema": 1, "connection": "open",
                                                           "updated_at": "2026-01-01T00:00:00Z"}))
    (cfg,) = load_configs(str(bot.cfg_dir), None)
    cfg.log_files = {"out": str(out), "err": str(err)}  # as an adopted bot names them (pm2 is not running)
    children: list[str] = []
    real = privdrop.BotChild.__init__

    def counted(self: Any, c: Any, fn: Any, *args: Any, **kw: Any) -> None:
        children.append(fn.__name__)
        real(self, c, fn, *args, **kw)

    monkeypatch.setattr(privdrop.BotChild, "__init__", counted)
    batched = agent_facts.bot_facts(cfg, {"version": None}, agent_facts.HostReads([cfg]))
    assert children == ["_child_many"]
    children.clear()
    monkeypatch.setattr(agent_facts, "prefetch", lambda *_a: contextlib.nullcontext())
    one_each = agent_facts.bot_facts(cfg, {"version": None})
    assert sorted(children) == ["_child_auth_facts", "_child_library_info", "_child_read", "_child_read",
                                "_child_read"]
    assert batched["logs"]["streams"]["out"][-1] == END_OUT[-1] and batched["health"]["connection"] == "open"
    for doc in (batched, one_each):  # what changes between two reads a moment apart
        doc["health"].pop("age_s")
        doc["disk"].pop("free_bytes")
    assert batched == one_each
