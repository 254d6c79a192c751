"""`waops provision`: thin. Options -> waops.provision -> live task lines on stderr, recap or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from waops.cli.app import App, global_options, pass_app

EPILOG = """\b
Examples:
  waops provision -i inventories/prod                        (every host of waops_bot_hosts)
  waops provision -i inventories/prod bot1.example.com       (one host)
  waops provision -i inventories/prod --check --diff         (what would change; changes nothing)
  ANSIBLE_VAULT_PASSWORD_FILE=~/.waops-vault waops provision -i inventories/prod
\b
The same as `ansible-playbook -i INVENTORY playbooks/site.yml`, with the playbooks bundled in waops,
the inventory checked first, and a per-host recap. Vaulted secrets: set ANSIBLE_VAULT_PASSWORD_FILE
(or ansible.cfg's vault_password_file); waops never asks for or prints them.
\b
Exit codes:
  0  converged (or, with --check, nothing failed)
  1  a task failed on some host
  2  usage error: malformed inventory, no matching host, a host without waops_bots
  3  a host was unreachable
  130 interrupted"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("hosts", nargs=-1)
@click.option("--check", is_flag=True, help="Report what would change; change nothing (ansible --check).")
@click.option("--diff", is_flag=True, help="Show file differences (ansible --diff).")
@global_options("inventory", "output")
@pass_app
def provision(app: App, hosts: tuple[str, ...], check: bool, diff: bool) -> None:
    """Run playbooks/site.yml against an inventory."""
    from rich.console import Console

    from waops.provision import provision as run_provision

    c = Console(stderr=True, highlight=False)
    result = run_provision(app.inventory(), hosts or ("waops_bot_hosts",), check=check, diff=diff,
                           on_progress=_progress(c))
    if app.output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _recap(c, result)
    sys.exit(result.exit_code)


def _progress(c: Any) -> Any:
    from rich.markup import escape

    def on(p: Any) -> None:
        if p.kind == "task_start":
            c.print(f"[dim]{escape(p.task)}[/]")
        elif p.kind in ("failed", "unreachable"):
            c.print(f"  [red]{p.kind}[/] {escape(p.host or '')}: {escape(p.message)}")

    return on


def _recap(c: Any, result: Any) -> None:
    from rich.table import Table

    t = Table(title=f"site.yml{' --check' if result.check else ''} on {result.inventory}")
    for col in ("host", "ok", "changed", "failed", "unreachable"):
        t.add_column(col)
    for host in result.hosts:
        st = result.run.stats.get(host)
        if st is None:
            t.add_row(host, "-", "-", "-", "-")
            continue
        bad = "red" if st.failed or st.unreachable else "green"
        t.add_row(f"[{bad}]{host}[/]", str(st.ok), str(st.changed), str(st.failed), str(st.unreachable))
    c.print(t)
    from rich.markup import escape

    for f in result.run.failures[:10]:
        kind = "unreachable" if f.unreachable else "failed"
        c.print(f"[red]{kind}[/] {escape(f.host)}: {escape(f.task)}: {escape(f.message)}")
    c.print(f"status: {result.run.status}, {result.changed} change(s)")
