"""The `waops` command line. Thin: each subcommand lives in its own module, imported only when used,
so `waops --help` stays fast (heavy libraries such as ansible-runner and paramiko load lazily)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from waops import __version__
from waops.errors import EXIT_INTERRUPTED, EXIT_PROBLEM, EXIT_USAGE, WaopsError

# name -> (module, attribute, one-line help shown without importing the module)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "lab": ("waops.cli.lab", "lab", "Real lab hosts (systemd-nspawn), the WhatsApp simulator and fault injection."),
    "provision": ("waops.cli.provision", "provision", "Run playbooks/site.yml against an inventory."),
    "diagnose": ("waops.cli.diagnose", "diagnose", "Read hosts live over SSH (or a saved log) and name the cause."),
    "recover": ("waops.cli.recover", "recover", "Diagnose, apply the smallest fix that works, verify, roll back."),
    "migrate": ("waops.cli.migrate", "migrate", "Move a bot's session to another auth store without a new QR."),
    "qr": ("waops.cli.recover", "qr", "Show the current QR code or pairing code of a bot."),
    "adopt": ("waops.cli.adopt", "adopt", "Propose inventory entries for the Baileys bots already running on a host."),
    "move": ("waops.cli.move", "move", "Move a bot to another host without a new QR (old copy fenced first)."),
    "incidents": ("waops.cli.incidents", "incidents", "List and show recorded incidents."),
    "mttr": ("waops.cli.incidents", "mttr", "MTTR report per cause against the 15-minute target."),
    "demo": ("waops.cli.demo", "demo", "The whole job on the sandbox: provision, break, diagnose, recover, MTTR."),
}

EPILOG = """\b
Exit codes:
  0  healthy / done
  1  problem found (diagnose) or not resolved (recover)
  2  usage error: bad flags, no or malformed inventory, bad store, config or input
  3  a host was unreachable or its SSH host key was refused
  4  a person must act (ban, rate limit, QR not scanned)
  75 busy: another run holds the bot's lock (try again later)
  130 interrupted
\b
Inventory: -i, else WAOPS_INVENTORY, else `inventory` in waops.toml; there is no default.
\b
Environment: every global option also reads WAOPS_<NAME>; NO_COLOR turns colour off."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        # Only commands whose module exists are offered; find_spec does not import it.
        return sorted(name for name, (module, _, _) in _COMMANDS.items() if importlib.util.find_spec(module))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the subcommand is not built yet
                return None
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="waops")
def cli() -> None:
    """waops: operations for WhatsApp bots built on Baileys."""


def main() -> None:
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting: pass it on.
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
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
        sys.exit(EXIT_PROBLEM)
    else:
        sys.exit(code if isinstance(code, int) else 0)
