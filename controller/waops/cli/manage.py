"""`waops manage`: move an adopted bot into the managed layout without a new QR (waops.manage)."""

from __future__ import annotations

import click

from waops.cli.app import App, global_options, pass_app
from waops.cli.migrate import finish
from waops.errors import UsageError

EPILOG = """\b
Example:
  waops manage -i inventories/prod bot1.example.com --bot wa-service --store files
\b
The bot gets its own user (wa-BOT), a release under /opt/waops/bots/BOT built from a commit of its
working copy (--version, default the commit it runs), a hardened systemd unit and a session store of
its own (--store), with the linked device carried over: a verified backup first, the adopted service
stopped, the session copied and read back, the unit started, and the bot proven open as the same
device. Then the adopted service is removed (pm2: deleted and the dump saved) and the inventory entry
is rewritten from adopted to managed (comments and layout kept). Otherwise everything goes back to the
adopted layout, the bot open on its own store again.
The code must follow the bot process contract (docs/CONTRACTS.md): its auth store from WAOPS_AUTH_STORE
and WAOPS_AUTH_DIR (or WAOPS_SQLITE_PATH, WAOPS_PG_*), not a path of the old layout.
\b
Exit codes: 0 managed and the inventory rewritten, 1 not moved (rolled back, or failed), 2 usage error,
3 host unreachable, 4 moved but the inventory could not be written safely: make the printed edit by
hand before the next provision, 75 another waops run holds the bot."""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host")
@click.option("--bot", required=True, help="The adopted bot to move.")
@click.option("--store", type=click.Choice(["files", "sqlite", "postgres"]), default="files", show_default=True,
              help="The managed session store.")
@click.option("--version", "version", default=None,
              help="Branch, tag or commit of the working copy to release [default: the commit it runs].")
@click.option("--entry", default="index.js", show_default=True, help="The script to start, in the release.")
@click.option("--verify-timeout", type=click.IntRange(min=5), default=150, show_default=True,
              help="Seconds to wait for the bot to be proven open as the same device.")
@global_options("inventory", "output", "timeout")
@pass_app
def manage(app: App, host: str, bot: str, store: str, version: str | None, entry: str, verify_timeout: int) -> None:
    """Move adopted BOT on HOST into the managed layout, keeping its linked device."""
    from waops import manage as svc
    from waops import recover as rc
    from waops.execute import run_playbook
    from waops.locking import BotLock

    inv = app.inventory()
    found = rc.targets(inv, [host], bot)
    if len(found) != 1:
        raise UsageError(f"{host}: expected one host with bot {bot}, found {len(found)}")
    h, target = found[0]
    listed = next((b for b in h.bots if b.name == bot), None)
    if listed is None or listed.adopted is None:
        raise UsageError(f"{host}/{bot} is not adopted: it is in the managed layout already")
    probe = rc.host_probe(h, target.bot, app.settings)
    if version is None:
        version = svc.release_of(probe())
    kept = {**listed.extra, **({"library_expected": listed.library_expected} if listed.library_expected else {}),
            **({"pairing": listed.pairing} if listed.pairing != "qr" else {})}
    wanted = svc.managed_entry(bot, listed.adopted, kept, version=version, store=store, entry=entry)

    def run(extravars: dict) -> object:
        return run_playbook(svc.PLAYBOOK, inventory=inv, limit=target.host, extravars=extravars, timeout_s=1800)

    with BotLock(target.host, target.bot):
        res = svc.manage(target.host, target.bot, wanted, probe=probe, run=run,
                         round_trip=rc.round_trip(target), verify_timeout_s=verify_timeout)
    edit = svc.record_managed(inv, target.host, target.bot, wanted) if res.outcome == "managed" else None
    finish(app, res, {**res.to_dict(), "entry": wanted, "inventory": edit.to_dict() if edit else None}, edit,
           f"{res.host}/{res.bot}: {res.outcome}: {res.why}")
