"""Linking: by QR (automatic scan) and by pairing code (scan on command); restart keeps the link."""

from __future__ import annotations

import time
from datetime import datetime

from tests.sandbox.harness import Sim, read_json, wait_until


def test_qr_link_writes_baileys_files_and_answers(sim: Sim, phone: str, make_bot) -> None:
    bot = make_bot(sim, phone)
    bot.wait_for("uploaded pre-keys")
    out = bot.out()
    for line in (
        "connected to WA",
        "not logged in, attempting registration...",
        "Scan this QR code",
        "pairing configured successfully, expect to restart the connection...",
        "Restart Required, Restarting...",
        "logging in...",
        "uploaded pre-keys",
    ):
        assert line in out
    assert 515 in bot.closed_codes()
    creds = read_json(bot.auth_dir / "creds.json")
    assert creds["me"]["id"].startswith(f"{phone}:") and creds["account"]
    assert creds["noiseKey"]["public"]["type"] == "Buffer"
    wait_until(lambda: len(bot.files("pre-key-")) == 30, 5, what="30 pre-keys")

    reply = sim.client.send_message(phone, "test", timeout=5)
    assert "is up" in reply and "6.7.18" in reply
    assert bot.files("session-") == ["session-15550109999.0.json"]
    health = wait_until(lambda: bot.health().get("last_message_sent_at") and bot.health(), 5, what="health")
    assert health["connection"] == "open" and health["library"] == {"name": "baileys", "version": "6.7.18"}
    view = sim.client.phone(phone)
    assert view["connected"] and view["devices"][0]["method"] == "qr" and view["devices"][0]["prekeys"] == 30


def test_pairing_code_link_on_command(sim: Sim, phone: str, make_bot) -> None:
    sim.client.set_auto_link(False)
    try:
        bot = make_bot(sim, phone, WAOPS_PAIRING="code")
        bot.wait_for("Pairing code: ")
        code = wait_until(lambda: bot.health().get("pairing_code"), 5, what="pairing code in health file")
        assert len(code) == 8 and bot.health()["connection"] == "waiting_link"
        assert sim.client.phone(phone)["waiting_link"]["pairing_code"] == code
        assert "opened connection" not in bot.out()
        sim.client.link(phone)
        bot.wait_for("opened connection to WA")
    finally:
        sim.client.set_auto_link(True)
    creds = read_json(bot.auth_dir / "creds.json")
    assert creds["registered"] is True
    assert sim.client.phone(phone)["devices"][0]["method"] == "code"
    wait_until(
        lambda: bot.health()["connection"] == "open" and bot.health()["pairing_code"] is None, 5, what="health open"
    )


def test_simulator_restart_keeps_linked_devices(tmp_path, phone: str, make_bot) -> None:
    own = Sim(tmp_path).start()
    try:
        bot = make_bot(own, phone)
        bot.wait_for("opened connection to WA")
        own.stop()
        bot.wait_for("Connection closed, reconnecting")
        own.start()
        bot.wait_for("opened connection to WA", count=2)
        assert bot.count("pairing configured successfully") == 1  # no new link was needed
        assert own.client.send_message(phone, "ping", timeout=5) == "pong"
    finally:
        own.stop()


def test_inactivity_logout_after_14_sim_days(tmp_path, phone: str, make_bot) -> None:
    own = Sim(tmp_path).start()
    try:
        bot = make_bot(own, phone)
        bot.wait_for("opened connection to WA")
        own.client.advance_clock(13 * 86400)
        assert own.client.send_message(phone, "test", timeout=5)  # activity resets the 14 days
        own.client.advance_clock(13 * 86400)
        assert own.client.phone(phone)["connected"]
        own.client.advance_clock(2 * 86400)
        bot.wait_for("Device Logged Out, Please Scan Again And Run.")
        assert 401 in bot.closed_codes()
        # The health file follows the simulator's clock (28+ days ahead), not the wall clock.
        at = wait_until(lambda: (bot.health()["last_disconnect"] or {}).get("at"), 5, what="disconnect time")
        assert datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() > time.time() + 27 * 86400
        device = own.client.phone(phone)["devices"][0]
        assert device["removed"] and device["removed_reason"] == "inactivity"
        session = [s for s in own.client.sessions() if s["phone"] == phone and s["code"] == 401]
        assert session and session[0]["had_keepalive"] is False
    finally:
        own.stop()


def test_unscanned_qr_ends_with_408_and_a_new_qr(tmp_path, phone: str, make_bot) -> None:
    own = Sim(tmp_path, "--no-auto-link", "--qr-ttl", "0.3", "--qr-next-ttl", "0.1").start()
    try:
        bot = make_bot(own, phone)
        wait_until(lambda: 408 in bot.closed_codes(), 10, what="QR refs attempts ended")
        record = next(r for r in bot.records() if r.get("msg") == "connection closed")
        assert record["err"]["message"] == "QR refs attempts ended"
        assert bot.count("Scan this QR code") >= 6
        bot.wait_for("Scan this QR code", count=7)  # the bot reconnects and shows a fresh QR
        assert bot.health()["connection"] == "waiting_link" and bot.health()["qr"]
    finally:
        own.stop()
