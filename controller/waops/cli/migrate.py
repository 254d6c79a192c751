"""`waops migrate`: move a bot's session to another auth store without a new QR (waops.migrate)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from waops.cli.app import App, global_options, pass_app
from waops.errors import ExitCode, UsageError

EPILOG = """\b
Exit codes: 0 migrated and the inventory updated, 1 not migrated (rolled back to the old store, or
failed), 2 usage error, 3 host unreachable, 4 migrated but the inventory could not be written safely:
make the printed edit by hand (site.yml writes what the inventory says), 75 another waops run holds the bot.

The bot's auth_store is written into the plain YAML file that lists the bot (host_vars/HOST.yml first),
comments and layout kept; a vaulted or templated file is left alone and the exact edit is printed."""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host")
@click.option("--bot", required=True, help="The bot to migrate.")
@click.option("--to", "to", required=True, type=click.Choice(["files", "sqlite", "postgres"]), help="The new store.")
@click.option("--verify-timeout", type=click.IntRange(min=5), default=150, show_default=True,
              help="Seconds to wait for the bot to be proven working on the new store.")
@global_options("inventory", "output", "timeout")
@pass_app
def migrate(app: App, host: str, bot: str, to: str, verify_timeout: int) -> None:
    """Move BOT's session on HOST to another store (files, sqlite, postgres) without a new link."""
    from waops import migrate as svc
    from waops import recover as rc
    from waops.execute import run_playbook
    from waops.locking import BotLock

    inv = app.inventory()
    found = rc.targets(inv, [host], bot)
    if len(found) != 1:
        raise UsageError(f"{host}: expected one host with bot {bot}, found {len(found)}")
    h, target = found[0]
    entry = next((b for b in h.bots if b.name == bot), None)
    if entry is not None and entry.adopted is not None:
        raise UsageError(f"{host}/{bot} is adopted: its store is its own code's choice (move it into the "
                         "managed layout first)")
    rt = rc.round_trip(target)

    def run(extravars: dict) -> object:
        return run_playbook(svc.PLAYBOOK, inventory=inv, limit=target.host, extravars=extravars,
                            timeout_s=1800)

    with BotLock(target.host, target.bot):
        res = svc.migrate(target.host, target.bot, to, probe=rc.host_probe(h, target.bot, app.settings), run=run,
                          round_trip=rt, verify_timeout_s=verify_timeout)
    edit = svc.record_store(inv, target.host, target.bot, to) if res.outcome == "migrated" else None
    finish(app, res, {**res.to_dict(), "inventory": edit.to_dict() if edit else None}, edit,
           f"{res.host}/{res.bot}: {res.outcome} ({res.source} -> {res.to}): {res.why}")


def finish(app: App, res: Any, doc: dict[str, Any], edit: Any, line: str) -> NoReturn:
    """Print a store change (`migrate`, `manage`) and exit: a change the inventory could not take is
    NEEDS_HUMAN, whatever the host says, because the next provision would undo it."""
    if app.output == "json":
        click.echo(json.dumps({"schema": 1, "results": [doc]}, indent=2))
    else:
        click.echo(line, err=True)
        if edit is not None:
            click.echo(f"inventory updated: {edit.edit}" if edit.written else
                       f"inventory NOT updated, do it by hand before the next provision: {edit.edit}", err=True)
    if edit is not None and not edit.written:
        sys.exit(ExitCode.NEEDS_HUMAN)
    sys.exit(res.exit_code)
