"""`waops demo`: thin. Runs waops_lab.demo.run_demo with rich output on stderr, JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from waops.errors import EXIT_OK, EXIT_PROBLEM

EPILOG = """\b
What it does (about 2-4 minutes on a laptop; the first run also builds the lab image):
  1. lab up: one Debian host (systemd-nspawn), the WhatsApp simulator, PostgreSQL
  2. provision the host with playbooks/site.yml (node, the sandbox bot, pm2 or systemd, the host agent)
  3. wait for the bot to link (the simulated phone scans the QR code)
  4. WhatsApp logs the device out (the simulator injects a session expiry, 401)
  5. waops diagnose names the cause; waops recover --yes backs up, resets, shows the new QR code,
     the simulated phone scans it, and a test message proves the bot answers again
  6. the MTTR report, then the lab goes down (--keep keeps it to look around)
Needs root, systemd-nspawn and debootstrap (see .ci/run)."""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]},
               short_help="The whole job on the sandbox: provision, break, diagnose, recover, MTTR.")
@click.option("--name", default="demo", show_default=True, help="Lab name (a-z, 0-9, '-', at most 12).")
@click.option("--manager", type=click.Choice(["pm2", "systemd"]), default="pm2", show_default=True,
              help="Service manager of the demo bot.")
@click.option("--keep", is_flag=True, help="Keep the lab running afterwards.")
@click.option("--store", envvar="WAOPS_DEMO_STORE", default=None, metavar="PATH|DSN",
              help="Incident store [env WAOPS_DEMO_STORE; default: a temporary one, removed at the end "
                   "(with --keep: demo-incidents.db in the state dir)].")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table (stderr) or json (stdout).")
def demo(name: str, manager: str, keep: bool, store: str | None, output: str) -> None:
    """The whole job on the sandbox: provision, break, diagnose, recover, MTTR."""
    from rich.console import Console

    from waops.cli.recover import RichUI, summary
    from waops.locking import state_dir
    from waops_lab.demo import run_demo

    c = Console(stderr=True, highlight=False)
    # Nothing stays behind unless asked: without --keep or --store, the incident store, the QR images and
    # the controller's state (its per-bot lock, the runner's directories) live in a temporary directory
    # that goes with the lab.
    with contextlib.ExitStack() as stack:
        if keep or store:
            scratch = state_dir()
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waops-demo-")))
            stack.enter_context(_state_home(scratch / "state"))
        ui = RichUI(scratch / "qr", interactive=False)
        progress = _provision_progress(c)
        result = run_demo(name=name, manager=manager, keep=keep,
                          store=store or str(scratch / "demo-incidents.db"), ui=ui, say=c.print,
                          on_progress=progress)
    if output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        if result.recover is not None:
            summary([result.recover])
        _mttr(c, result.report)
        _stages(c, result.stages)
    ok = result.recover is not None and result.recover.outcome in ("resolved", "rolled_back")
    sys.exit(EXIT_OK if ok else EXIT_PROBLEM)


@contextlib.contextmanager
def _state_home(path: Path) -> Iterator[None]:
    """XDG_STATE_HOME (where waops keeps its state) set to `path` for the demo's run."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old


def _provision_progress(c: Any) -> Any:
    from rich.markup import escape

    seen = [0]

    def on(p: Any) -> None:
        if p.kind == "task_start":
            seen[0] += 1
            if seen[0] % 10 == 0:
                c.print(f"    [dim]{seen[0]} tasks... {p.task}[/]")
        elif p.kind in ("failed", "unreachable"):
            c.print(f"    [red]{p.kind}[/] {escape(p.task)}: {escape(p.message)}")

    return on


def _mttr(c: Any, rows: list[Any]) -> None:
    from rich.table import Table

    from waops.mttr import format_duration

    t = Table(title="MTTR (demo store) against the 15-minute target")
    for col in ("cause", "incidents", "repaired", "median", "p90", "p90 excl. human", "p90 ok"):
        t.add_column(col)
    for r in rows:
        ok = {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[r.meets_target]
        t.add_row(r.cause, str(r.incidents), str(r.repaired), format_duration(r.median_s), format_duration(r.p90_s),
                  format_duration(r.p90_excl_human_s), ok)
    c.print(t)


def _stages(c: Any, stages: list[tuple[str, float]]) -> None:
    total = sum(s for _, s in stages)
    c.print("[bold]time per stage[/]: " + ", ".join(f"{n.split(':')[0].split(' (')[0]} {s:.0f}s" for n, s in stages)
            + f"; total {total:.0f}s")
