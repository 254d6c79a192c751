"""The simulator's pure parts: version order (405), the clock, state persistence, the control API shape."""

from __future__ import annotations

import asyncio
import time

import pytest

from waops_host.versions import bump_patch, older_than
from waops_lab.sandbox import state as st
from waops_lab.sandbox.clock import SimClock
from waops_lab.sandbox.control import ControlApi
from waops_lab.sandbox.server import Simulator


@pytest.mark.parametrize(
    ("version", "minimum", "older"),
    [
        ("6.7.18", "6.7.19", True),
        ("6.7.18", "6.7.18", False),
        ("7.0.0-rc.9", "7.0.0", True),
        ("7.0.0-rc.9", "7.0.0-rc.10", True),
        ("7.0.0", "7.0.0-rc.9", False),
        ("6.7.20", "6.7.9", False),
        ("garbage", "6.7.0", True),
    ],
)
def test_version_order(version: str, minimum: str, older: bool) -> None:
    assert older_than(version, minimum) is older


def test_bump_patch_is_above_prereleases() -> None:
    assert bump_patch("6.7.18") == "6.7.19"
    assert older_than("7.0.0-rc.9", bump_patch("7.0.0-rc.9"))


def test_clock_speed_and_advance() -> None:
    clock = SimClock(speed=3600, start=1_000_000)
    time.sleep(0.01)
    assert clock.now() - 1_000_000 >= 30  # 0.01 s real = 36 s simulated
    before = clock.now()
    clock.advance(86400)
    assert clock.now() - before >= 86400
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_state_round_trip(tmp_path) -> None:
    path = tmp_path / "state.json"
    state = st.SimState()
    phone = state.phone("15550100001")
    phone.devices["15550100001:1@s.whatsapp.net"] = st.Device(
        id="15550100001:1@s.whatsapp.net",
        lid="1:1@lid",
        noise="n",
        linked_at=1.0,
        method="qr",
        last_active=2.0,
        ratchets={"15550109999@s.whatsapp.net": 4},
    )
    phone.faults.ban_code = 403
    state.config.link_delay = 0.5
    st.save(state, path)
    loaded = st.load(path)
    device = loaded.phones["15550100001"].devices["15550100001:1@s.whatsapp.net"]
    assert device.ratchets == {"15550109999@s.whatsapp.net": 4}
    assert loaded.phones["15550100001"].faults.active() == ["banned"]
    assert loaded.config.link_delay == 0.5
    assert loaded.find_device("15550100001:1@s.whatsapp.net")[1] is device


def test_control_api_routes_without_a_bot() -> None:
    async def run() -> None:
        sim = Simulator(st.SimState())
        api = ControlApi(sim)
        assert (await api.route("GET", "/phones/15550100009", {}))["devices"] == []
        await api.route("POST", "/phones/15550100009/fault", {"cause": "banned", "code": 402})
        assert sim.phone_view("15550100009")["fault_detail"]["ban_code"] == 402
        await api.route("POST", "/phones/15550100009/clear", {})
        assert sim.phone_view("15550100009")["faults"] == []
        snap = await api.route("POST", "/clock/advance", {"seconds": 60})
        assert snap["now"] > time.time() + 59

    asyncio.run(run())
