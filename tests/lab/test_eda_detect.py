"""Detection in seconds on a real lab host: WhatsApp logs the bot out (401, set in the simulator), the
keep-alive agent inside the bot reports the close through its root socket, `waops-host keepalive` (run
by the socket unit as root) raises the session incident at once, and the signed webhook reaches the
collection's EDA event source, which puts the event on its queue, the one the rulebook matches.

The host keeps the shipped 10-minute `session_down_minutes` hold, so an event within a minute can only
come from the agent's report (the every-minute quick check waits out the hold). The event source runs in
this process (its `main(queue, args)`, as ansible-rulebook runs it), so the test sees when the event is
queued. Then the hostile side: another user cannot connect to the bot's socket, and the bot user's junk
and floods are refused or rate limited. tests/bench/bench_detect.py prints the latency."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.test_provision_support import health, run_site, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "extensions" / "eda" / "plugins" / "event_source" / "waops_webhook.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class EventSource(threading.Thread):
    """The collection's event source, listening for the lab hosts; every event kept with when it came."""

    def __init__(self, port: int, secret: str) -> None:
        super().__init__(daemon=True)
        spec = importlib.util.spec_from_file_location("waops_webhook_under_test", SOURCE)
        assert spec and spec.loader
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.port, self.secret = port, secret
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None

    def run(self) -> None:
        events = self.events

        class Queue:
            async def put(self, event: dict[str, Any]) -> None:
                events.append((time.monotonic(), event))

        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.module.main(Queue(), {
            "host": "0.0.0.0", "port": self.port, "secret": self.secret}))
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.join(10)

    def opened(self, bot: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events
                if e["payload"]["bot"] == bot and e["payload"]["event"] == "open"
                and e["payload"]["condition"] == "session_down"]


def provision_posting_to(lab: Any, port: int, secret: str, extra: dict[str, Any] | None = None) -> None:
    """site.yml with every host's check posting to the event source on the lab's gateway (and `extra`
    host variables); the session condition keeps its shipped hold."""
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for host in lab.hosts():
        (host_vars / f"{host.name}.yml").write_text(yaml.safe_dump({
            "waops_host_alert_webhook_url": f"http://{lab.network.gateway}:{port}/waops",
            "waops_host_alert_webhook_secret": secret,
            **(extra or {}),
        }))
    site = run_site(lab.inventory_dir)
    assert site.rc == 0, site.tail()
    for host in lab.hosts():
        for bot in host.bots:
            assert wait_until(lambda h=host, b=bot["name"]: health(lab, h, b).get("connection") == "open", 90), (
                health(lab, host, bot["name"]))


def detect_once(lab: Any, source: EventSource, host: Any, bot: str = "shop") -> tuple[float, dict[str, Any]]:
    """401 in the simulator -> the event on the source's queue: (seconds, event)."""
    from waops_lab.lab.faults import inject

    before = len(source.opened(bot))
    faulted = time.monotonic()
    inject(lab, host.name, "logged_out", bot)
    assert wait_until(lambda: len(source.opened(bot)) > before, 60, interval=0.2), (
        lab.ssh(host, "journalctl -u 'waops-keepalive-backup-*' --no-pager -n 40"))
    at, event = source.opened(bot)[before]
    return at - faulted, event


def as_user(lab: Any, host: Any, user: str, data: str, sock: str) -> str:
    """One connection to the bot's socket as `user`: send data, print the answer (or the error)."""
    code = ("import socket,sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    s.connect({sock!r})\n"
            "except OSError as e:\n"
            "    print('ERROR', e.strerror); sys.exit(0)\n"
            f"s.sendall({data.encode()!r}); s.shutdown(socket.SHUT_WR)\n"
            "out = b''\n"
            "try:\n"
            "    while (chunk := s.recv(65536)):\n"
            "        out += chunk\n"
            "except ConnectionResetError:\n"  # the service closed with our surplus bytes unread
            "    pass\n"
            "print(out.decode().strip().splitlines()[-1] if out.strip() else 'NOTHING')\n")
    return lab.ssh(host, f"runuser -u {user} -- python3 -c {shlex.quote(code)}", timeout=120).strip()


def test_a_logout_reaches_the_event_source_within_seconds(lab_factory) -> None:
    lab = lab_factory("t-detect", 1, ("pm2",))
    (host,) = lab.hosts()
    source = EventSource(_free_port(), secrets.token_urlsafe(24))
    source.start()
    try:
        provision_posting_to(lab, source.port, source.secret)
        seconds, event = detect_once(lab, source, host)
        payload = event["payload"]
        assert event["meta"]["hosts"] == payload["host"] == host.name
        assert payload["details"]["reported_close"]["code"] == 401, payload
        assert payload["severity"] == "critical" and payload["started_at"]
        print(f"401 -> event on the EDA source's queue: {seconds:.1f} s (the check's hold is 10 min)")

        sock = "/run/waops/keepalive-backup-shop.sock"
        # Only the bot's user may connect (the socket is its, 0600).
        assert as_user(lab, host, "nobody", "", sock).startswith("ERROR")
        # The bot user speaks only for its bot, in the one shape, within bounds.
        for junk in ('{"close": {"code": 401}, "bot": "other"}\n', "x" * 4096, '{"close": {"code": "401"}}\n'):
            answer = json.loads(as_user(lab, host, "wa-shop", junk, sock))
            assert answer["ok"] is False and answer["error"], answer
        flood = [json.loads(as_user(lab, host, "wa-shop", '{"close": {"code": 440}}\n', sock)) for _ in range(8)]
        assert any(a.get("error") == "rate limited" for a in flood), flood
        assert len(source.opened("shop")) == 1  # the incident stays one incident: announced once
        assert source.secret not in lab.ssh(host, "journalctl --no-pager -n 400")
    finally:
        source.stop()
