"""`waops adopt HOST`: propose the inventory entries of the Baileys bots already running on HOST
(waops.adopt); nothing on the host changes."""

from __future__ import annotations

import json
import sys

import click

from waops.cli.app import App, global_options, pass_app
from waops.errors import ExitCode, UsageError

EPILOG = """\b
Examples:
  waops adopt -i inventories/prod bot1.example.com > adopted.yml
  waops adopt -i inventories/prod bot1.example.com --output json | jq '.found.bots[].name'
\b
HOST must be in the inventory (ansible_host, ansible_user; root or ansible_become with sudo -n): waops
reaches it as Ansible does. The YAML is for host_vars/HOST.yml; secrets (database URLs) are vault
placeholders, and comments say where each value is on the host. Read-only: nothing on the host changes.
\b
Exit codes: 0 bots found, 1 none found, 2 usage error (host not in the inventory),
3 host unreachable or its key refused."""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default=None,
              help="yaml: the host_vars entries (default); json: what was found and the entries "
                   "[a global `-o json` before the command means json too].")
@global_options("inventory", "timeout")
@pass_app
def adopt(app: App, host: str, output: str | None) -> None:
    """Find the Baileys bots running on HOST (pm2 apps, systemd units) and print their inventory entries."""
    from waops import adopt as svc
    from waops import inventory as inv

    inventory = app.inventory()
    hosts = [h for h in inv.load(inventory, [host]) if h.name == host]
    if not hosts:
        raise UsageError(f"{host} is not in {inventory}: add it (ansible_host, ansible_user) first")
    fmt = output or ("json" if app.output == "json" else "yaml")
    doc, proposals = svc.run(hosts[0], max(app.settings.timeout, 60.0))
    if fmt == "json":
        click.echo(json.dumps({"schema": 1, "host": host, "found": doc,
                               "waops_bots": [p.entry for p in proposals],
                               "notes": [n for p in proposals for n in p.notes],
                               "vault": {k: v for p in proposals for k, v in p.vault.items()}}, indent=2))
    else:
        click.echo(svc.render(host, proposals), nl=False)
    if not proposals:
        click.echo(f"waops: no Baileys bot found on {host} (pm2 apps and systemd units running node)", err=True)
    sys.exit(ExitCode.OK if proposals else ExitCode.PROBLEM)
