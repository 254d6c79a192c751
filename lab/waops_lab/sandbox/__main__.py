"""`python -m waops_lab.sandbox serve ...`: run the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from waops_lab.sandbox import state as st
from waops_lab.sandbox.clock import SimClock
from waops_lab.sandbox.control import ControlApi
from waops_lab.sandbox.server import QR_FIRST_TTL, QR_NEXT_TTL, Simulator


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m waops_lab.sandbox", description="WhatsApp simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the simulator")
    serve.add_argument("--listen", type=_hostport, default=("127.0.0.1", 7800), help="bot protocol HOST:PORT")
    serve.add_argument("--control", type=_hostport, default=("127.0.0.1", 7801), help="control API HOST:PORT")
    serve.add_argument("--state", type=Path, default=None, help="state file (JSON); kept across restarts")
    serve.add_argument("--link-delay", type=float, default=None, help="seconds before the phone links by itself")
    serve.add_argument("--no-auto-link", action="store_true", help="link only on the control API's command")
    serve.add_argument("--clock-speed", type=float, default=1.0, help="simulated seconds per real second")
    serve.add_argument("--qr-ttl", type=float, default=QR_FIRST_TTL, help="lifetime of the first QR (s)")
    serve.add_argument("--qr-next-ttl", type=float, default=QR_NEXT_TTL, help="lifetime of later QRs (s)")
    serve.add_argument("--ready-file", type=Path, default=None, help="write 'bot_port control_port' when up")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    state = st.load(args.state)
    if args.link_delay is not None:
        state.config.link_delay = args.link_delay
    if args.no_auto_link:
        state.config.auto_link = False
    # Never back in time: resume from the saved sim time, or from now if that is later.
    clock = SimClock(args.clock_speed, start=max(state.clock_now or 0.0, time.time()))
    sim = Simulator(state, args.state, clock, (args.qr_ttl, args.qr_next_ttl))
    api = ControlApi(sim)
    bots = await asyncio.start_server(sim.handle_bot, *args.listen, limit=1 << 22)
    control = await asyncio.start_server(api.handle, *args.control)
    bot_port = bots.sockets[0].getsockname()[1]
    control_port = control.sockets[0].getsockname()[1]
    logging.info("bots on %s:%d, control on http://%s:%d", args.listen[0], bot_port, args.control[0], control_port)
    if args.ready_file:
        args.ready_file.write_text(f"{bot_port} {control_port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    checker = loop.create_task(sim.inactivity_loop())
    async with bots, control:
        await stop.wait()
    checker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await checker
    sim.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s sim %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
