"""The lab's verification round trip: `python -m waops_lab.sandbox.roundtrip --control URL`.

waops runs the command an inventory names in `waops_verify_roundtrip_command` after a fix, with the bot
in the environment (WAOPS_BOT_PHONE, WAOPS_ROUNDTRIP_TIMEOUT; see waops.verify.command_round_trip).
Here a simulated contact sends `test` through the simulator and the bot must answer. Exit 0 = answered,
1 = not answered; the last line printed is the detail waops shows."""

from __future__ import annotations

import argparse
import os
import sys

from waops_lab.sandbox.client import SimulatorClient, SimulatorError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m waops_lab.sandbox.roundtrip")
    parser.add_argument("--control", required=True, help="the simulator's control URL")
    args = parser.parse_args(argv)
    phone = os.environ.get("WAOPS_BOT_PHONE", "")
    timeout = float(os.environ.get("WAOPS_ROUNDTRIP_TIMEOUT") or 10)
    if not phone:
        print("test message: the bot has no phone in the inventory")
        return 1
    try:
        reply = SimulatorClient(args.control, timeout=timeout + 5).send_message(phone, "test", timeout=timeout)
    except (SimulatorError, OSError) as exc:
        print(f"test message: {exc}")
        return 1
    if not reply:
        print("test message: empty reply")
        return 1
    print(f"test message answered: {reply[:80]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
