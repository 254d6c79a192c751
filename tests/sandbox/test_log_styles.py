"""The sandbox bot logs through pino, pino-pretty, console.log and logfmt (WAOPS_LOG_STYLE); a fault
injected into the simulator is diagnosed from the bot's own output in every style, read the way the
facts carry it (each stream's raw lines, assembled by waops.logparse)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.sandbox.harness import Bot, Sim, wait_until
from waops.diagnose import Diagnosis, diagnose_log, records_from_logs


def diagnosis(bot: Bot) -> Diagnosis:
    return diagnose_log(records_from_logs({"streams": {"out": bot.out().splitlines(),
                                                       "err": bot.err().splitlines()}}))


def looks_like(style: str, out: str) -> bool:
    first = next(line for line in out.splitlines() if "starting bot" in line)
    return {
        "pino": first.startswith('{"level":30'),
        "pretty": first.startswith("[") and "] INFO (" in first,
        "console": first.startswith("starting bot {"),
        "logfmt": first.startswith("time=") and " level=info msg=\"starting bot\"" in first,
    }[style]


# (style, fault, its arguments, expected cause, expected code): one cause per style, four styles
CASES = [
    ("pretty", "logged_out", {}, "logged_out", 401),
    ("console", "banned", {"code": 403}, "banned", 403),
    ("logfmt", "client_outdated", {}, "client_outdated", 405),
    ("pino", "corrupt_keys", {"burst": 12}, "corrupt_keys", None),
]


@pytest.mark.parametrize(("style", "fault", "args", "cause", "code"), CASES, ids=[c[0] for c in CASES])
def test_fault_is_diagnosed_in_every_log_style(
    sim: Sim, phone: str, make_bot: Callable[..., Bot], style: str, fault: str, args: dict, cause: str,
    code: int | None,
) -> None:
    bot = make_bot(sim, phone, WAOPS_LOG_STYLE=style)
    bot.wait_for("uploaded pre-keys")
    assert looks_like(style, bot.out()), bot.out()[:400]
    healthy = diagnosis(bot)
    assert healthy.cause == "healthy", healthy.evidence
    sim.client.fault(phone, fault, **args)

    def diagnosed() -> bool:
        d = diagnosis(bot)
        return d.cause == cause and (code is None or d.code == code)

    wait_until(diagnosed, 10, what=f"{cause} diagnosed from the {style} log")
    sim.client.clear(phone)


def test_unknown_style_is_one_clear_error(sim: Sim, phone: str, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(sim, phone, WAOPS_LOG_STYLE="xml")
    assert bot.proc is not None
    assert bot.proc.wait(10) != 0
    assert "WAOPS_LOG_STYLE must be one of pino, pretty, console, logfmt, not xml" in bot.err()
