"""The `waops` command line. Thin: each subcommand lives in its own module, imported only when used,
so `waops --help` stays fast (heavy libraries such as ansible-runner and paramiko load lazily)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

import click

from waops import __version__
from waops.cli.app import global_options, make_app
from waops.errors import MEANING, ExitCode, WaopsError

if TYPE_CHECKING:
    import importlib.metadata

# name -> (module, attribute, one-line help shown without importing the module)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "provision": ("waops.cli.provision", "provision", "Run playbooks/site.yml against an inventory."),
    "diagnose": ("waops.cli.diagnose", "diagnose", "Read hosts live over SSH (or a saved log) and name the cause."),
    "recover": ("waops.cli.recover", "recover", "Diagnose, apply the smallest fix that works, verify, roll back."),
    "migrate": ("waops.cli.migrate", "migrate", "Move a bot's session to another auth store without a new QR."),
    "qr": ("waops.cli.recover", "qr", "Show the current QR code or pairing code of a bot."),
    "adopt": ("waops.cli.adopt", "adopt", "Propose inventory entries for the Baileys bots already running on a host."),
    "manage": ("waops.cli.manage", "manage", "Move an adopted bot into the managed layout (no new QR)."),
    "move": ("waops.cli.move", "move", "Move a bot to another host without a new QR (old copy fenced first)."),
    "incidents": ("waops.cli.incidents", "incidents", "List and show recorded incidents."),
    "mttr": ("waops.cli.incidents", "mttr", "MTTR report per cause against the 15-minute target."),
}
# Other distributions add command groups here (waops-lab: `lab`, `demo`); loaded only when used.
ENTRY_POINT_GROUP = "waops.commands"

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {int(c):<3} {MEANING[c]}" for c in ExitCode) + """
\b
Inventory: -i, else WAOPS_INVENTORY, else `inventory` in ./waops.toml or ~/.config/waops/waops.toml;
there is no default (without one, commands that need it exit 2 and say where they looked).
\b
Global options go before or after the command (`waops -i INV diagnose --all` = `waops diagnose -i INV
--all`); every one also reads WAOPS_<NAME>; NO_COLOR turns colour off."""


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Commands other installed distributions register (entry-point group waops.commands). Imported only
    here: a command of our own (`waops diagnose`) never pays for importlib.metadata (and zipfile)."""
    import importlib.metadata

    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name not in _COMMANDS}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        # Only commands whose module exists are offered; find_spec does not import it.
        own = [name for name, (module, _, _) in _COMMANDS.items() if importlib.util.find_spec(module)]
        return sorted([*own, *_plugins()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            plugin = _plugins().get(cmd_name)
            return plugin.load() if plugin is not None else None
        module, attr, _ = entry
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the subcommand is not built yet
                return None
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        plugins = _plugins()
        rows = []
        for name in self.list_commands(ctx):
            if name in _COMMANDS:
                rows.append((name, _COMMANDS[name][2]))
            else:  # the first line of the command's own help (its module is imported for that)
                cmd = self.get_command(ctx, name)
                rows.append((name, cmd.get_short_help_str(100) if cmd else f"from {plugins[name].value}"))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="waops")
@global_options()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """waops: operations for WhatsApp bots built on Baileys."""
    ctx.obj = make_app(ctx.obj)


def main() -> None:
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting: pass it on.
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except WaopsError as exc:
        click.echo(f"waops: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one line for the operator, the traceback only when asked for
        if os.environ.get("WAOPS_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        click.echo(f"waops: internal error: {type(exc).__name__}: {first} (WAOPS_DEBUG=1 shows where)", err=True)
        sys.exit(ExitCode.PROBLEM)
    else:
        sys.exit(code if isinstance(code, int) else ExitCode.OK)
