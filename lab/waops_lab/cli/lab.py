"""`waops lab`: real lab hosts, the simulator and fault injection. Needs root."""

from __future__ import annotations

import json
import os

import click

from waops_lab.errors import LabError

_name_option = click.option("--name", envvar="WAOPS_LAB_NAME", default="default", show_default=True,
                            help="Lab name; several labs can run side by side. [env: WAOPS_LAB_NAME]")


def _lab(name: str):
    from waops_lab.lab import Lab, LabSettings

    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, mounts, a bridge)")
    return Lab(LabSettings.from_env(name))


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group(short_help="Real lab hosts (systemd-nspawn), the WhatsApp simulator and fault injection.")
def lab() -> None:
    """Real Debian hosts (systemd-nspawn, sshd, cron) on a private bridge, PostgreSQL reachable from them,
    and the WhatsApp simulator. The last line of `up` is an inventory for ansible-playbook."""


@lab.command()
@_name_option
@click.option("--hosts", "count", default=1, show_default=True, type=click.IntRange(1, 60),
              help="How many hosts to add.")
@click.option("--managers", default="pm2,systemd", show_default=True,
              help="Service managers given to the hosts in turn.")
@click.option("--bastion", is_flag=True, help="Reach the hosts only through one more host, <name>-bastion.")
@click.option("--certificate", is_flag=True, help="Log in with a user certificate signed by the lab's CA.")
def up(name: str, count: int, managers: str, bastion: bool, certificate: bool) -> None:
    """Boot hosts (building the image once) and print the inventory path last."""
    chosen = tuple(m.strip() for m in managers.split(",") if m.strip())
    if not chosen or set(chosen) - {"pm2", "systemd"}:
        raise click.BadParameter("use pm2 and/or systemd", param_hint="--managers")
    inventory = _lab(name).up(count, chosen, log=_log, bastion=bastion, certificate=certificate)
    click.echo(str(inventory))


@lab.command()
@_name_option
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(name: str, output: str) -> None:
    """List the lab's hosts."""
    the_lab = _lab(name)
    rows = the_lab.status()
    if output == "json":
        click.echo(json.dumps({"lab": name, "hosts": rows, "inventory": str(the_lab.inventory_dir)}, indent=2))
        return
    if not rows:
        _log(f"lab {name}: no hosts")
        return
    for r in rows:
        state = "running" if r["running"] else "stopped"
        click.echo(f"{r['name']:<14} {r['ip']:<15} {r['service_manager']:<8} {state:<8} {','.join(r['bots'])}")


@lab.command()
@_name_option
def down(name: str) -> None:
    """Remove everything the lab made: containers, mounts, bridge, firewall rules, processes."""
    the_lab = _lab(name)
    the_lab.down(log=_log)
    left = the_lab.leftovers()
    if left:
        raise LabError("left behind: " + "; ".join(left))


@lab.command()
@_name_option
@click.argument("host")
@click.argument("command", nargs=-1)
def ssh(name: str, host: str, command: tuple[str, ...]) -> None:
    """Open a shell (or run COMMAND) on a lab host over SSH with strict host-key checking."""
    the_lab = _lab(name)
    argv = the_lab.ssh_argv(the_lab.host(host), " ".join(command))
    if not command:
        argv = [a for a in argv if a != "BatchMode=yes"][:-1]
    os.execvp(argv[0], argv)


@lab.command()
@_name_option
@click.argument("host")
@click.argument("cause")
@click.option("--bot", default=None, help="Bot on the host (default: its first bot).")
def fault(name: str, host: str, cause: str, bot: str | None) -> None:
    """Inject a fault by cause name into HOST's bot (or `clear` to end it).

    Faults of the WhatsApp side go to the simulator; faults that live on the host (deleted creds,
    a stopped process, a bad release, a second instance) are made there as they happen in real life."""
    from waops_lab.lab.faults import inject

    _log(inject(_lab(name), host, cause, bot))


