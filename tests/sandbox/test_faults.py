"""Every fault the simulator injects, seen the way an operator sees it: in the bot's own logs."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.sandbox.harness import Bot, Sim, wait_until
from waops_lab.sandbox.client import SimulatorError


def stream_error_types(bot: Bot) -> list[str]:
    return [
        child["attrs"].get("type")
        for r in bot.records()
        if r.get("msg") == "stream errored out"
        for child in r["node"].get("content", [])
    ]


def test_logged_out_gives_401_device_removed_and_no_reconnect(sim: Sim, phone: str, linked_bot: Bot) -> None:
    sim.client.fault(phone, "logged_out")
    linked_bot.wait_for("Device Logged Out, Please Scan Again And Run.")
    assert "device_removed" in stream_error_types(linked_bot)
    record = next(
        r
        for r in linked_bot.records()
        if r.get("msg") == "stream errored out" and r["level"] == 50 and r["node"]["attrs"].get("code") == "401"
    )
    assert record["class"] == "baileys"
    assert linked_bot.closed_codes()[-1] == 401
    # The keep-alive agent's 401 rule: a few tries while the session files exist, then stop for good.
    linked_bot.wait_for("stopped reconnecting: logged out")
    attempts = linked_bot.count("connected to WA")
    time.sleep(1.0)  # several reconnect delays
    assert linked_bot.count("connected to WA") == attempts
    health = linked_bot.health()
    assert health["connection"] == "stopped"
    # The last close is the refused retry ("Connection Failure"); the stream error above said device_removed.
    assert health["last_disconnect"]["code"] == 401 and "link it again" in health["stopped_reason"]
    # The old credentials stay refused: a backup cannot bring a removed device back.
    assert sim.client.phone(phone)["devices"][0]["removed"]


def test_network_cut_gives_428_then_408_and_recovers(sim: Sim, phone: str, linked_bot: Bot) -> None:
    sim.client.fault(phone, "network")
    linked_bot.wait_for("Connection closed, reconnecting")
    wait_until(lambda: 408 in linked_bot.closed_codes(), 5, what="408 while the network is cut")
    assert 428 in linked_bot.closed_codes()
    # the bot prints its own line from the connection.update handler, a tick after the close record
    linked_bot.wait_for("Connection Lost from Server, reconnecting", timeout=5)
    opened = linked_bot.count("opened connection to WA")
    sim.client.clear(phone)
    linked_bot.wait_for("opened connection to WA", count=opened + 1)
    assert sim.client.send_message(phone, "test", timeout=5)


def test_second_instance_on_same_creds_gives_440(sim: Sim, phone: str, linked_bot: Bot, make_bot, tmp_path) -> None:
    copy = tmp_path / "second" / "auth"
    shutil.copytree(linked_bot.auth_dir, copy)
    second = make_bot(sim, phone, name="second", WAOPS_AUTH_DIR=str(copy))
    linked_bot.wait_for("Connection Replaced, Another New Session Opened")
    assert "replaced" in stream_error_types(linked_bot)
    assert 440 in linked_bot.closed_codes()
    second.stop()
    assert any(s["code"] == 440 and s["reason"] == "replaced" for s in sim.client.sessions() if s["phone"] == phone)


def test_restored_stale_session_keys_give_bad_mac(sim: Sim, phone: str, linked_bot: Bot, make_bot, tmp_path) -> None:
    assert sim.client.send_message(phone, "test", timeout=5)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in linked_bot.files("session-"):
        shutil.copy2(linked_bot.auth_dir / name, snapshot / name)
    for _ in range(2):
        assert sim.client.send_message(phone, "ping", timeout=5) == "pong"
    linked_bot.stop()
    for f in snapshot.iterdir():  # the "backup" from before those messages
        shutil.copy2(f, linked_bot.auth_dir / f.name)
    linked_bot.start()
    linked_bot.wait_for("opened connection to WA", count=2)
    with pytest.raises(SimulatorError) as exc:
        sim.client.send_message(phone, "test", timeout=1.5)
    assert exc.value.status == 504
    err = linked_bot.err()
    assert "Session error:Error: Bad MAC Error: Bad MAC" in err
    assert "Failed to decrypt message with any known session..." in err
    assert any(r.get("msg") == "failed to decrypt message" and r["level"] == 50 for r in linked_bot.records())

    # The runbook's fix: drop the broken sessions and restart; the sender starts over with a pre-key message.
    linked_bot.stop()
    for name in linked_bot.files("session-"):
        (linked_bot.auth_dir / name).unlink()
    linked_bot.start()
    linked_bot.wait_for("opened connection to WA", count=3)
    assert "is up" in sim.client.send_message(phone, "test", timeout=5)


def test_corrupt_keys_fault_floods_bad_mac(sim: Sim, phone: str, linked_bot: Bot) -> None:
    result = sim.client.fault(phone, "corrupt_keys", burst=3)
    assert result["ratchets"]
    linked_bot.wait_for("Bad MAC", count=3 * 2, stream="err")  # "Session error:..." carries it twice


@pytest.mark.parametrize("code", [403, 402])
def test_banned(sim: Sim, phone: str, linked_bot: Bot, code: int) -> None:
    sim.client.fault(phone, "banned", code=code)
    wait_until(lambda: linked_bot.closed_codes().count(code) >= 2, 5, what=f"{code} on every login")
    failures = [
        r
        for r in linked_bot.records()
        if r.get("msg") == "connection closed" and r["err"]["output"]["statusCode"] == code
    ]
    assert failures[-1]["err"]["message"] == "Connection Failure"
    sim.client.clear(phone)


def test_client_outdated_gives_405_until_cleared(sim: Sim, phone: str, linked_bot: Bot) -> None:
    result = sim.client.fault(phone, "client_outdated")
    assert result["min_version"] == "6.7.19"
    wait_until(lambda: linked_bot.closed_codes().count(405) >= 2, 5, what="405 on every login")
    opened = linked_bot.count("opened connection to WA")
    sim.client.clear(phone)
    linked_bot.wait_for("opened connection to WA", count=opened + 1)


def test_rate_limited_sends_fail_with_429(sim: Sim, phone: str, linked_bot: Bot) -> None:
    sim.client.fault(phone, "rate_limited")
    linked_bot.wait_for("rate-overlimit")
    record = next(r for r in linked_bot.records() if r.get("msg") == "failed to send reply")
    assert record["data"] == 429 and record["err"]["message"] == "rate-overlimit"
    sim.client.clear(phone)
    assert sim.client.send_message(phone, "ping", timeout=5) == "pong"


def test_file_bloat_makes_the_bot_write_thousands_of_key_files(sim: Sim, phone: str, linked_bot: Bot) -> None:
    before = len(linked_bot.files())
    sim.client.fault(phone, "file_bloat", count=1500)
    wait_until(lambda: len(linked_bot.files()) > before + 1400, 15, interval=0.2, what="key files")
    assert len(linked_bot.files("pre-key-")) > 700
    assert len(linked_bot.files("sender-key-")) > 600
    assert linked_bot.count("uploaded pre-keys") > 10


def test_unknown_cause_is_refused(sim: Sim, phone: str) -> None:
    with pytest.raises(SimulatorError) as exc:
        sim.client.fault(phone, "meteor")
    assert exc.value.status == 409
