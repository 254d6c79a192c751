"""The keep-alive agent inside the sandbox bot, against the simulator's accelerated clock: keep-alives on
schedule and never in quiet hours, a real `waops-host backup` after each, the health file never
half-written, session age and duration in the log, bounded 401 reconnects, device lifetimes recorded."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.agent.agent_helpers import AGENT, PYTHON
from tests.sandbox.harness import Bot, Sim, wait_until

SPEED = 10800.0  # 3 simulated hours per real second: 12 h keep-alives every 4 s
# Lateness in simulated time is real scheduling delay times SPEED: 3 h is 1 s of real time, room for a
# loaded 2-core CI machine, while a wrong schedule (6 h, 24 h, no postponement) is still far outside it.
TOLERANCE = timedelta(hours=3)
TZ = "Asia/Kolkata"  # +05:30, so a quiet window computed in UTC would be off by hours


@pytest.fixture
def fast_sim(tmp_path: Path) -> Iterator[Sim]:
    """A simulator of our own: speeding its clock must not age other tests' devices."""
    (tmp_path / "fastsim").mkdir()
    s = Sim(tmp_path / "fastsim").start()
    yield s
    s.stop()


def agent_backup_cmd(tmp_path: Path, bot_env: dict[str, str], name: str) -> list[str]:
    """The host agent, run as cron and the role's backup service run it, with a config for this bot."""
    cfg_dir = tmp_path / "agent-cfg"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / f"{name}.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "name": name,
                "user": pwd.getpwuid(os.getuid()).pw_name,
                "service_manager": "pm2",
                "service_name": name,
                "release_root": str(tmp_path / "opt"),
                "auth_store": "files",
                "auth_dir": bot_env["WAOPS_AUTH_DIR"],
                "health_file": bot_env["WAOPS_HEALTH_FILE"],
                "backup_dir": str(tmp_path / "backups" / name),
                "backup_keep": 50,
                "library_package": "baileys",
            }
        )
    )
    return [PYTHON, str(AGENT), "backup", "--reason", "keepalive", "--bot", name, "--json",
            "--config-dir", str(cfg_dir), "--lock-dir", str(tmp_path / "lock")]  # fmt: skip


def agent_list(cmd: list[str]) -> list[dict[str, Any]]:
    """`waops-host list --json` with the same bot, config and lock dirs as the backup command."""
    tail = cmd[cmd.index("--bot") :]
    out = subprocess.run([*cmd[:2], "list", *tail], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)["results"][0]["backups"]


class HealthReader(threading.Thread):
    """Reads the health file as fast as it can; a half-written file would fail to parse."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.reads, self.bad = path, 0, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                continue
            self.reads += 1
            try:
                json.loads(raw)
            except ValueError:
                self.bad.append(raw[:200])


def keepalive_records(bot: Bot, msg: str) -> list[dict[str, Any]]:
    return [r for r in bot.records() if r.get("class") == "waops-keepalive" and r.get("msg") == msg]


def sim_dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def in_window(at: datetime, start: int, end: int) -> bool:
    local = at.astimezone(ZoneInfo(TZ))
    minute = local.hour * 60 + local.minute + local.second / 60
    return start <= minute < end if start < end else minute >= start or minute < end


def hhmm(minute: int) -> str:
    minute %= 1440
    return f"{minute // 60:02d}:{minute % 60:02d}"


def test_keepalives_on_schedule_never_in_quiet_hours_with_a_backup_each(
    fast_sim: Sim, phone: str, make_bot: Callable[..., Bot], tmp_path: Path
) -> None:
    # The link happens at speed 1 (~1 s from now), so the first keep-alive is due ~12 h after now. Put the
    # quiet window around that due time: it must be postponed to the window's end, then run every 12 h.
    t0 = sim_dt(fast_sim.client.clock()["now"]).astimezone(ZoneInfo(TZ))
    due = t0 + timedelta(hours=12)
    start = due.hour * 60 + due.minute - 60
    quiet = (start % 1440, (start + 180) % 1440)
    env = {
        "WAOPS_AUTH_DIR": str(tmp_path / "ka" / "auth"),
        "WAOPS_HEALTH_FILE": str(tmp_path / "ka" / "health.json"),
    }
    cmd = agent_backup_cmd(tmp_path, env, "ka")
    bot = make_bot(
        fast_sim, phone, name="ka", WAOPS_KEEPALIVE_HOURS="12", WAOPS_QUIET_HOURS=f"{hhmm(quiet[0])}-{hhmm(quiet[1])}",
        WAOPS_TZ=TZ, WAOPS_KEEPALIVE_TICK_MS="100", WAOPS_BACKUP_CMD=json.dumps(cmd), **env,
    )  # fmt: skip
    bot.wait_for("opened connection to WA", timeout=15)
    reader = HealthReader(bot.health_file)
    reader.start()
    try:
        fast_sim.client.set_clock_speed(SPEED)
        bot.wait_for("keep-alive sent", count=3, timeout=60)
        for i in range(15):  # contacts write: every message rewrites the health file while it is read
            assert fast_sim.client.send_message(phone, f"hello {i}") == f"echo: hello {i}"
        bot.wait_for("keep-alive backup done", count=3, timeout=60)
    finally:
        fast_sim.client.set_clock_speed(1)
        reader.halt.set()
        reader.join()

    # Server-side truth: when the simulator received each presence update.
    events = fast_sim.client.events(phone)
    opened = sim_dt(next(e["at"] for e in events if e["type"] == "open"))
    sent = [sim_dt(e["at"]) for e in events if e["type"] == "presence"][:3]
    assert len(sent) == 3
    assert not [s for s in sent if in_window(s, *quiet)], f"keep-alive in quiet hours {quiet}: {sent}"
    # 1st: due at open + 12 h, inside the window -> at the window's end; then every 12 h.
    expected = [opened + timedelta(hours=12)]
    while in_window(expected[0], *quiet):
        expected[0] += timedelta(minutes=1)
    assert expected[0] - opened > timedelta(hours=12, minutes=30), "the test's window missed the first due time"
    assert timedelta(minutes=-2) <= sent[0] - expected[0] <= TOLERANCE, f"first at {sent[0]}, expected {expected[0]}"
    # Then every 12 h after the previous one (the schedule is relative to the last keep-alive sent).
    for before, after in pairwise(sent):
        gap = after - before
        assert timedelta(hours=12, minutes=-2) <= gap <= timedelta(hours=12) + TOLERANCE, f"gap {gap}: {sent}"
    assert keepalive_records(bot, "keep-alive postponed: quiet hours")

    # The log: each keep-alive with the session's age (sim seconds since this connection opened).
    lines = keepalive_records(bot, "keep-alive sent")[:3]
    ages = [r["session_age_s"] for r in lines]
    for age, got in zip(ages, sent, strict=True):
        assert abs(age - (got - opened).total_seconds()) <= TOLERANCE.total_seconds()
    assert ages == sorted(ages) and ages[0] > 12 * 3600
    assert all(r["device_age_s"] >= r["session_age_s"] for r in lines)

    # A real backup after each keep-alive, verified by the host agent.
    done = keepalive_records(bot, "keep-alive backup done")
    ids = [r["backup_id"] for r in done]
    assert len(set(ids)) == len(ids) >= 3 and all(r["verified"] for r in done)
    listed = {b["id"]: b for b in agent_list(cmd)}
    assert set(ids) <= set(listed)
    assert {listed[i]["reason"] for i in ids} == {"keepalive"} and all(listed[i]["creds_linked"] for i in ids)

    # Never a half-written health file, and it carries the keep-alive.
    assert reader.reads > 100 and reader.bad == [], f"{len(reader.bad)} unparsable reads of {reader.reads}"
    health = bot.health()
    assert health["connection"] == "open" and health["keepalive"]["count"] >= 3
    assert health["last_keepalive_at"] and health["keepalive"]["last_backup"]["ok"] is True
    assert not list(bot.health_file.parent.glob(".health.json.tmp-*"))


def test_401_bounded_reconnects_then_stop_and_session_duration(sim: Sim, phone: str, linked_bot: Bot) -> None:
    opened = linked_bot.health()["session_started_at"]
    sim.client.fault(phone, "logged_out")
    linked_bot.wait_for("stopped reconnecting", timeout=10)
    tries = keepalive_records(linked_bot, "logged out (401): reconnect attempt")
    assert [r["attempt"] for r in tries] == [1, 2, 3]
    connects = linked_bot.count("connected to WA")
    time.sleep(1.0)  # five reconnect delays: nothing more
    assert linked_bot.count("connected to WA") == connects
    assert linked_bot.proc is not None and linked_bot.proc.poll() is None, "the bot stays up (pm2 would restart it)"
    stop = keepalive_records(linked_bot, "stopped reconnecting: logged out (401) 4 times in a row: "
                                          "the device was removed; link it again")  # fmt: skip
    assert stop and stop[0]["level"] == 50
    health = linked_bot.health()
    assert health["connection"] == "stopped" and "link it again" in health["stopped_reason"]
    assert health["logged_out_attempts"] == 3
    # The disconnect that ended the linked session logs how long it lived.
    ended = keepalive_records(linked_bot, "session ended")
    assert ended[0]["code"] == 401 and ended[0]["reason"] == "device_removed"
    assert ended[0]["session_started_at"] == opened and ended[0]["session_duration_s"] >= 0


def test_no_session_files_means_no_401_retry(sim: Sim, phone: str, linked_bot: Bot) -> None:
    # Bots that delete the auth folder on 401 have nothing to retry with: stop at once.
    for f in linked_bot.auth_dir.iterdir():
        f.unlink()
    sim.client.fault(phone, "logged_out")
    linked_bot.wait_for("stopped reconnecting: logged out \\(401\\) and no session keys left")
    assert not keepalive_records(linked_bot, "logged out (401): reconnect attempt")


def test_lifetimes_with_and_without_keepalive(fast_sim: Sim, make_bot: Callable[..., Bot], phone: str) -> None:
    # Inactivity logout after 18 simulated hours; presence counts as activity (the simulator's default).
    fast_sim.client.configure(inactivity_days=0.75, presence_counts_as_activity=True)
    with_ka = make_bot(fast_sim, phone, name="with", WAOPS_KEEPALIVE_HOURS="12", WAOPS_QUIET_HOURS="off",
                       WAOPS_KEEPALIVE_TICK_MS="100", WAOPS_BACKUP_CMD="off")  # fmt: skip
    other = phone[:-2] + f"{(int(phone[-2:]) + 50) % 100:02d}"
    without = make_bot(fast_sim, other, name="without", WAOPS_KEEPALIVE_HOURS="0")
    with_ka.wait_for("opened connection to WA", timeout=15)
    without.wait_for("opened connection to WA", timeout=15)
    fast_sim.client.set_clock_speed(SPEED)
    try:
        without.wait_for("stopped reconnecting", timeout=15)  # 18 h later: logged out, retried, stopped
        wait_until(lambda: len(keepalive_records(with_ka, "keep-alive sent")) >= 2, 10, what="two keep-alives")
    finally:
        fast_sim.client.set_clock_speed(1)
    by_phone = {r["phone"]: r for r in fast_sim.client.lifetimes()}
    gone, alive = by_phone[other], by_phone[phone]
    assert gone["ended"] and gone["reason"] == "inactivity" and not gone["keepalive"]
    assert abs(gone["lifetime_s"] - 0.75 * 86400) < 3600
    assert not alive["ended"] and alive["keepalive"] and alive["presences"] >= 2
    assert alive["lifetime_s"] > gone["lifetime_s"]
    # The connection-level records carry the same flag.
    sessions = [s for s in fast_sim.client.sessions() if s["phone"] == other and s["end"] is not None]
    assert sessions[0]["reason"] == "inactivity" and sessions[0]["had_keepalive"] is False


QUIET_JS = """
const { parseQuietHours, checkTimeZone, quietRemainingMs } = require(process.argv[2])
const at = (s) => Date.parse(s)
const night = parseQuietHours('22:00-06:00'), early = parseQuietHours('01:00-06:00')
const out = {
  summer: quietRemainingMs(at('2026-07-01T20:30:00Z'), night, 'Europe/Berlin'),   // 22:30 CEST: inside
  winter: quietRemainingMs(at('2026-01-01T20:30:00Z'), night, 'Europe/Berlin'),   // 21:30 CET: outside
  last30s: quietRemainingMs(at('2026-03-02T05:59:30Z'), early, 'UTC'),
  atEnd: quietRemainingMs(at('2026-03-02T06:00:00Z'), early, 'UTC'),
  off: parseQuietHours('off'),
}
for (const bad of [() => parseQuietHours('1-6'), () => checkTimeZone('Mars/Olympus')]) {
  try { bad(); out.bad = 'accepted' } catch (e) { out.bad = (out.bad || 0) + 1 }
}
console.log(JSON.stringify(out))
"""


def test_quiet_hours_follow_the_time_zone(tmp_path: Path) -> None:
    from tests.sandbox.harness import KEEPALIVE_DIR, node_binary

    node = node_binary()
    if not node:
        pytest.skip("node is required")
    (tmp_path / "q.js").write_text(QUIET_JS)
    quiet_js = str(KEEPALIVE_DIR / "waops-keepalive" / "quiet.js")
    run = subprocess.run([node, "q.js", quiet_js], cwd=tmp_path, capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)
    assert out == {"summer": 7.5 * 3600 * 1000, "winter": 0, "last30s": 30000, "atEnd": 0, "off": None, "bad": 2}


def test_a_bad_quiet_hours_or_zone_setting_never_takes_the_bot_down(
    sim: Sim, phone: str, make_bot: Callable[..., Bot], tmp_path: Path
) -> None:
    bot = make_bot(sim, phone, name="typo", WAOPS_QUIET_HOURS="25:00-06:00", WAOPS_TZ="Europe/Berln",
                   WAOPS_AUTH_DIR=str(tmp_path / "typo" / "auth"), WAOPS_HEALTH_FILE=str(tmp_path / "typo" / "h.json"))
    bot.wait_for("opened connection to WA", timeout=15)
    assert bot.proc is not None and bot.proc.poll() is None
    errors = {r["msg"]: r for r in bot.records() if r.get("class") == "waops-keepalive" and r.get("level") == 50}
    assert errors["keep-alive: invalid quiet hours, using the default"]["using"] == "01:00-06:00"
    assert errors["keep-alive: invalid time zone, using the default"]["using"] == "UTC"
    # The health file is written by its own timer, a moment after the connection log line.
    wait_until(lambda: bot.health().get("connection") == "open", 10, what="health file says open")


class KeepaliveSocket(threading.Thread):
    """The role's socket unit, as systemd runs it (Accept=yes): each connection to a unix socket becomes
    one `waops-host keepalive --bot NAME` with the connection as its stdin and stdout."""

    def __init__(self, path: Path, argv: list[str]) -> None:
        super().__init__(daemon=True)
        import socket

        self.path, self.argv, self.logs = path, argv, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: Any) -> None:
        with conn:
            p = subprocess.run(self.argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.PIPE,
                               text=True, timeout=120, check=False)
            self.logs.append((time.monotonic(), p.returncode, p.stderr))

    def close(self) -> None:
        self.server.close()


def test_a_close_reaches_the_host_agent_at_once_through_the_socket(
        sim: Sim, phone: str, make_bot: Callable[..., Bot], tmp_path: Path) -> None:
    env = bot_env_paths(tmp_path, "shop")
    backup_cmd = agent_backup_cmd(tmp_path, env, "shop")
    argv = [backup_cmd[0], backup_cmd[1], "keepalive", *backup_cmd[backup_cmd.index("--bot"):],
            "--state-dir", str(tmp_path / "check-state")]
    server = KeepaliveSocket(tmp_path / "keepalive.sock", argv)
    server.start()
    try:
        bot = make_bot(sim, phone, WAOPS_BACKUP_SOCKET=str(server.path), WAOPS_KEEPALIVE_HOURS="0")
        bot.wait_for("uploaded pre-keys")
        faulted = time.monotonic()
        sim.client.fault(phone, "logged_out")
        def taken() -> list[tuple[float, int, str]]:
            return [entry for entry in server.logs if "close reported (code 401" in entry[2]]

        wait_until(taken, 30, what="the host agent took the close report")
        first, rc, log = min(taken())
        # answered ok; the session incident is open (no process manager here: the process reads as down,
        # so the 515 restart after the link may have opened it already; the agent tests cover the hold)
        assert rc == 0 and "session_down" in log, log
        bot.wait_for("stopped reconnecting", timeout=20)
        assert not keepalive_records(bot, "close report to the host failed")
        print(f"401 -> close report taken by the host agent: {first - faulted:.2f} s")
    finally:
        server.close()


def bot_env_paths(root: Path, name: str) -> dict[str, str]:
    """The bot's auth folder and health file as make_bot lays them out (bot_env)."""
    return {"WAOPS_AUTH_DIR": str(root / name / "auth"), "WAOPS_HEALTH_FILE": str(root / name / "health.json")}


def test_a_bad_mac_flood_is_counted_and_reported_while_the_connection_stays_open(
        sim: Sim, phone: str, make_bot: Callable[..., Bot], tmp_path: Path) -> None:
    """The simulator's corrupt_keys: stale session keys, messages fail with Bad MAC. The sandbox upserts each
    as Baileys does (a CIPHERTEXT stub with the error), the agent counts them in the health file and reports
    the flood on the socket once, and the connection never closes."""
    env = bot_env_paths(tmp_path, "shop")
    backup_cmd = agent_backup_cmd(tmp_path, env, "shop")
    argv = [backup_cmd[0], backup_cmd[1], "keepalive", *backup_cmd[backup_cmd.index("--bot"):],
            "--state-dir", str(tmp_path / "check-state")]
    server = KeepaliveSocket(tmp_path / "keepalive.sock", argv)
    server.start()
    try:
        bot = make_bot(sim, phone, WAOPS_BACKUP_SOCKET=str(server.path), WAOPS_KEEPALIVE_HOURS="0")
        bot.wait_for("uploaded pre-keys")
        closes = len(bot.records())  # the 515 after the link is a close; the flood must add none
        sim.client.fault(phone, "corrupt_keys", burst=12)

        def taken() -> list[tuple[float, int, str]]:
            return [entry for entry in server.logs if "decrypt failures reported" in entry[2]]

        wait_until(taken, 30, what="the host agent took the decrypt report")
        ((_, rc, log),) = taken()
        assert rc == 0, log
        df = json.loads(Path(env["WAOPS_HEALTH_FILE"]).read_text())["decrypt_failures"]
        assert df["count"] >= 12 and df["last_reason"] == "Bad MAC" and df["window_s"] == 300, df
        assert len(keepalive_records(bot, "messages failing to decrypt: reporting to the host")) == 1
        assert json.loads(Path(env["WAOPS_HEALTH_FILE"]).read_text())["connection"] == "open"
        assert not [r for r in bot.records()[closes:] if r.get("msg") == "session ended"]
    finally:
        server.close()
