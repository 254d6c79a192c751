"""Live diagnosis on the log styles real bots use: one lab host runs three bots under pm2, provisioned
with `waops_bot`'s `log_style` set to pino-pretty, console.log and logfmt. A fault injected into each
(by the simulator, as the fault matrix does) must be named by `waops diagnose` (the CLI, over real SSH,
from the agent's facts), exactly as for the default pino bot in test_recover.py.

Set WAOPS_TEST_LAB=<name> to reuse a lab that is up and provisioned this way (development)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.test_recover import RcLab, _provision, diagnose_cli, facts, wait_healthy

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "styles"
# bot -> (log style, simulator fault, its parameters, expected cause, expected code)
STYLES: dict[str, tuple[str, str, dict[str, Any], str, int | None]] = {
    "shop": ("pretty", "logged_out", {}, "logged_out", 401),
    "crm": ("console", "client_outdated", {}, "client_outdated", 405),
    "ops": ("logfmt", "banned", {"code": 403}, "banned", 403),
}
SHAPE = {  # the bot's own "starting bot" line in each style (pm2's `time: true` prefix in front)
    "pretty": re.compile(r"\[[\d:.]+\] INFO \(\d+\): starting bot"),
    "console": re.compile(r"(?:^|: )starting bot \{"),
    "logfmt": re.compile(r"(?:^|: )time=\S+ level=info msg=\"starting bot\""),
}


def _write_bots(lab: Any) -> None:
    h1 = lab.hosts()[0]
    base = h1.bots[0]
    bots = [dict(base, name=name, phone=base["phone"][:-2] + f"{60 + k:02d}", log_style=style)
            for k, (name, (style, *_)) in enumerate(STYLES.items())]
    bots[0]["phone"] = base["phone"]
    host_vars = lab.inventory_dir / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{h1.name}.yml").write_text(json.dumps({"waops_bots": bots}))
    state = json.loads(lab.state_file.read_text())
    state["hosts"][0]["bots"] = bots
    lab.state_file.write_text(json.dumps(state, indent=2))


@pytest.fixture(scope="module")
def stylelab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    try:
        if not reuse:
            lab.up(1, ("pm2",), log=lambda _m: None)
            _write_bots(lab)
            _provision(lab.inventory_dir)
        r = RcLab(lab, lab.inventory_dir, tmp_path_factory.mktemp("styles") / "incidents.db")
        for bot in STYLES:
            wait_healthy(r, 1, bot)
        yield r
    finally:
        if not reuse:
            lab.down(log=lambda _m: None)


@pytest.mark.parametrize("bot", list(STYLES))
def test_fault_is_diagnosed_live_in_each_log_style(stylelab: RcLab, bot: str) -> None:
    style, fault, params, cause, code = STYLES[bot]
    shipped = [line for lines in facts(stylelab, 1, bot)["logs"]["streams"].values() for line in lines]
    first = next(line for line in shipped if "starting bot" in line)
    assert SHAPE[style].search(first), first
    rc, healthy = diagnose_cli(stylelab, 1, bot)
    assert healthy["cause"] == "healthy", healthy
    stylelab.sim.fault(stylelab.phone(1, bot), fault, **params)
    try:
        deadline = time.monotonic() + 90
        result: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rc, result = diagnose_cli(stylelab, 1, bot)
            if result["cause"] == cause and result["code"] == code:
                break
            time.sleep(2)
        assert (result.get("cause"), result.get("code")) == (cause, code), result
        assert rc != 0  # a diagnosis that is not healthy is a non-zero exit
        assert result["evidence"], "the lines that decided it are shown"
    finally:
        stylelab.sim.clear(stylelab.phone(1, bot))
