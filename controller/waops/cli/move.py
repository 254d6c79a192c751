"""`waops move`: thin. Options -> waops.move -> progress on stderr, JSON or a summary on stdout."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from waops.cli.app import App, global_options, pass_app
from waops.errors import ExitCode

MOVE_EPILOG = """\b
Examples:
  waops move -i inventories/prod shop --to bot-2                      (prints the inventory change)
  waops move -i inventories/prod shop --to bot-2 --write-inventory    (makes it; keeps a .before-move copy)
\b
Order: a verified backup on the old host and the old copy FENCED (stopped, disabled, kept from starting)
first; when the old host does not answer, the new host records itself as owner in the bot's restic
repository and the old host fences itself before its bot starts again. Then the new host is provisioned
(site.yml limited to it, the bot's service installed but not started), the backup comes over (from the
old host, else from the repository), is restored and started, and the session is verified (open, no QR,
a test message when the inventory sets
waops_verify_roundtrip_command). A move that does not verify is rolled back to
the old host when it answers. Recorded as an incident, cause `moved` or `host_lost`.
\b
Exit codes:
  0  moved and verified
  1  not moved (rolled back, or failed: the steps say where)
  2  usage error (bot on no host or several, target host not in the inventory)
  3  the new host could not be reached"""


@click.command(epilog=MOVE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bot")
@click.option("--to", "to_host", required=True, help="Inventory host that takes the bot over.")
@click.option("--write-inventory", is_flag=True, help="Write the inventory change after a verified move.")
@click.option("--verify-timeout", type=click.IntRange(min=10), default=180, show_default=True,
              help="Seconds for the session to open on the new host.")
@global_options("inventory", "output", "timeout", "store")
@pass_app
def move(app: App, bot: str, to_host: str, write_inventory: bool, verify_timeout: int) -> None:
    """Move BOT to another host without a new QR (fence the old copy first)."""
    from waops import move as svc
    from waops.incidents import connect

    inv = Path(app.inventory())
    opts = svc.MoveOptions(write_inventory=write_inventory, verify_timeout_s=verify_timeout)
    with tempfile.TemporaryDirectory(prefix="waops-move-") as work, connect(app.store) as st:
        edges = svc.HostEdges(inv, app.settings)
        res = svc.Move(inv, bot, to_host, opts, edges, st, Path(work),
                       status=lambda t: click.echo(f"{bot}: {t}", err=True)).run()
    if app.output == "json":
        click.echo(json.dumps({"schema": 1, "result": res.to_dict()}, indent=2, default=str))
    else:
        mttr = f" in {res.mttr_s:.0f}s" if res.mttr_s is not None else ""
        click.echo(f"{bot}: {res.old} -> {res.new}: {res.outcome}{mttr} ({res.cause}; backup {res.backup_id} "
                   f"from {res.source}) {res.why}")
        verb = "written" if res.inventory_written else "to make (or rerun with --write-inventory)"
        click.echo(f"inventory change {verb}:\n  " + "\n  ".join(res.inventory_change))
    sys.exit(ExitCode.OK if res.outcome == "resolved" else ExitCode.PROBLEM)
