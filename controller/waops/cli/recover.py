"""`waops recover` and `waops qr`: thin. The App's settings -> waops.recover (which loops over the bots) ->
rich on stderr, JSON on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from waops.cli.app import App, global_options, pass_app
from waops.errors import ExitCode, UsageError

RECOVER_EPILOG = """\b
Examples:
  waops recover -i inventories/prod bot-1 --bot shop
  waops recover -i inventories/prod --all --yes --output json
  waops recover -i inventories/prod bot-1 --bot shop --pair-phone 15550100001   (pairing code, no QR)
  waops recover -i inventories/prod bot-1 --dry-run                             (diagnose and plan only)
\b
Flow per bot: lock -> diagnose -> plan -> confirm destructive steps (unless --yes) -> incident ->
run the steps -> show the QR code or pairing code when a new link is needed -> verify (connection open,
fresh, no new failure, plus a test message through waops_verify_roundtrip_command when the inventory
sets one) -> on failure walk the rollback chain -> close the incident (resolved, rolled_back,
needs_human, failed) -> summary.
A healthy bot is left alone; a banned or rate-limited number is never touched.
\b
Exit codes:
  0  resolved, rolled back to working, healthy, or dry run
  1  not resolved (a fix failed, or recover itself broke)
  2  usage error
  3  a host was unreachable or its SSH host key was refused
  4  a person must act (ban, rate limit, unknown cause, QR not scanned, steps not confirmed)
  75 another waops run holds this bot's lock
  130 interrupted (the incident is recorded as failed)"""


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class RichUI:
    """Progress and questions on stderr; stdout stays free for --output json."""

    def __init__(self, qr_dir: Path, interactive: bool) -> None:
        self.c = _console()
        self.qr_dir = qr_dir
        self.interactive = interactive

    def _esc(self, s: str) -> str:
        from rich.markup import escape

        return escape(s)

    def plan(self, target: Any, state: Any, plan: Any) -> None:
        d = state.diagnosis
        code = f" (code {d.code})" if d.code is not None else ""
        self.c.print(f"[bold]{target.host}/{target.bot}[/]: cause [bold]{d.cause}[/]{code}, "
                     f"confidence {getattr(d, 'confidence', 0):.2f}")
        for e in list(d.evidence)[:4]:
            self.c.print(f"  [dim]{self._esc(str(e))[:200]}[/]")
        self.c.print(f"  plan: {self._esc(plan.why)}")
        for i, stage in enumerate([plan.steps, *plan.rollback_chain]):
            label = "fix" if i == 0 else f"fallback {i}"
            names = ", ".join(s.name + (" [red](destructive)[/]" if s.destructive else "") for s in stage)
            self.c.print(f"    {label}: {names}")

    def confirm(self, target: Any, plan: Any) -> bool:
        if not self.interactive:
            self.c.print("[yellow]destructive steps need confirmation: not a terminal, use --yes[/]")
            return False
        names = ", ".join(s.name for s in plan.all_steps() if s.destructive)
        return click.confirm(f"{target.host}/{target.bot}: run destructive steps ({names})? "
                             "A verified backup is taken first", default=False, err=True)

    def step(self, target: Any, step: Any, stage: int) -> None:
        where = "" if stage == 0 else f" [dim](fallback {stage})[/]"
        self.c.print(f"[cyan]>[/] {step.name}{where}: {self._esc(step.description)}")

    def progress(self, target: Any, p: Any) -> None:
        if p.kind == "task_start":
            self.c.print(f"    [dim]{self._esc(p.task)}[/]")
        elif p.kind in ("failed", "unreachable"):
            self.c.print(f"    [red]{p.kind}[/] {self._esc(p.task)}: {self._esc(p.message)}")

    def step_done(self, target: Any, outcome: Any) -> None:
        style = {"ok": "green", "needs_human": "magenta"}.get(outcome.result, "red")
        secs = (outcome.ended_at - outcome.started_at).total_seconds()
        self.c.print(f"  [{style}]{outcome.result}[/] {outcome.name} ({secs:.1f}s) {self._esc(outcome.detail)[:300]}")

    def link(self, target: Any, link: Any) -> None:
        show_link(self.c, link, self.qr_dir)

    def status(self, target: Any, text: str) -> None:
        self.c.print(f"    [dim]waiting: {self._esc(text)[:160]}[/]")

    def error(self, target: Any, text: str) -> None:
        self.c.print(f"[red]{target.host}/{target.bot}: {self._esc(text)}[/]")


def show_link(c: Any, link: Any, qr_dir: Path) -> Path | None:
    """The QR code in the terminal and as an image file, or the pairing code."""
    from waops.qrshow import ascii_qr, pairing_text, save_qr

    if link.pairing_code:
        c.print(f"[bold]{link.host}/{link.bot}[/]: on the phone open WhatsApp > Linked devices > "
                f"Link with phone number, and type [bold reverse] {pairing_text(link.pairing_code)} [/]")
        return None
    if not link.qr:
        return None
    path = save_qr(link.qr, qr_dir, f"{link.host}-{link.bot}")
    c.print(f"[bold]{link.host}/{link.bot}[/]: scan this with WhatsApp > Linked devices > Link a device "
            f"(also saved as {path}):")
    c.print(ascii_qr(link.qr), markup=False, highlight=False)
    return path


@click.command(epilog=RECOVER_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("hosts", nargs=-1)
@click.option("--all", "all_hosts", is_flag=True, help="Every host of the inventory.")
@click.option("--bot", default=None, help="Only this bot.")
@click.option("--dry-run", is_flag=True, help="Diagnose and show the plan; change nothing, record nothing.")
@click.option("--yes", "-y", is_flag=True, help="Run destructive steps without asking (a verified backup comes first).")
@click.option("--pair-phone", default=None, metavar="NUMBER",
              help="Relink with a pairing code for this phone number (E.164 digits) instead of a QR code.")
@click.option("--verify-timeout", type=click.IntRange(min=5), default=120, show_default=True,
              help="Seconds to wait for the bot to be proven working after a fix.")
@click.option("--link-timeout", type=click.IntRange(min=10), default=600, show_default=True,
              help="Seconds to wait for a person to scan the QR code or type the pairing code.")
@global_options("inventory", "output", "timeout", "store")
@pass_app
def recover(app: App, hosts: tuple[str, ...], all_hosts: bool, bot: str | None, dry_run: bool, yes: bool,
            pair_phone: str | None, verify_timeout: int, link_timeout: int) -> None:
    """Diagnose, apply the smallest fix that works, verify, roll back when it does not."""
    from waops import recover as svc
    from waops.execute import Cancel
    from waops.incidents import connect
    from waops.locking import state_dir

    if not hosts and not all_hosts:
        raise UsageError("name hosts (or groups), or use --all")
    if pair_phone is not None and not pair_phone.lstrip("+").isdigit():
        raise UsageError("--pair-phone: a phone number in E.164 digits, e.g. 15550100001")
    inv = app.inventory()
    opts = svc.RecoverOptions(dry_run=dry_run, yes=yes, pair_phone=pair_phone.lstrip("+") if pair_phone else None,
                              verify_timeout_s=verify_timeout, link_timeout_s=link_timeout)
    ui = RichUI(state_dir() / "qr", interactive=sys.stdin.isatty() and sys.stderr.isatty())
    cancel = Cancel()
    with connect(app.store) as st, cancel.trap_sigint():
        results = svc.recover_fleet(inv, ["all"] if all_hosts else list(hosts), bot, opts, st, app.settings, ui,
                                    cancel)
    if app.output == "json":
        click.echo(json.dumps({"schema": 1, "results": [r.to_dict() for r in results]}, indent=2, default=str))
    else:
        summary(results)
    sys.exit(svc.fleet_exit_code(results))  # after the document that says why


def summary(results: list[Any]) -> None:
    from rich.table import Table

    from waops.mttr import TARGET_S, format_duration

    t = Table(title="recover")
    for col in ("host", "bot", "cause", "outcome", "steps", "MTTR", "human wait", "incident", "why"):
        t.add_column(col, overflow="fold")
    style = {"resolved": "green", "rolled_back": "yellow", "healthy": "green", "dry_run": "cyan"}
    for r in results:
        mttr = format_duration(r.mttr_s)
        if r.mttr_s is not None:
            mttr += " [green](<15m)[/]" if r.mttr_s <= TARGET_S else " [red](>15m)[/]"
        steps = " ".join(f"{s.name}:{s.result}" for s in r.steps if s.kind != "escalate") or "-"
        t.add_row(r.host, r.bot, str(r.cause or "-") + (f" ({r.code})" if r.code else ""),
                  f"[{style.get(r.outcome, 'red')}]{r.outcome}[/]", steps, mttr,
                  format_duration(r.human_wait_s or None), str(r.incident_id or "-"), _esc(r.why))
    _console().print(t)


def _esc(s: str) -> str:
    from rich.markup import escape

    return escape(s)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host")
@click.option("--bot", default=None, help="The bot (default: the host's only bot).")
@global_options("inventory", "output", "timeout")
@pass_app
def qr(app: App, host: str, bot: str | None) -> None:
    """Show the current QR code or pairing code of a bot (from its health file). Exit 1 when none."""
    from waops import recover as svc
    from waops.locking import state_dir

    found = svc.targets(app.inventory(), [host], bot)
    if len(found) > 1:
        raise UsageError(f"{host} runs several bots ({', '.join(t.bot for _, t in found)}): use --bot")
    h, target = found[0]
    state = svc.host_probe(h, target.bot, app.settings)()
    link = state.link(target.host)
    if app.output == "json":
        path = None
        if link.qr:
            from waops.qrshow import save_qr

            path = str(save_qr(link.qr, state_dir() / "qr", f"{target.host}-{target.bot}"))
        click.echo(json.dumps({**link.to_dict(), "image": path}, indent=2))
    elif link.pending:
        show_link(_console(), link, state_dir() / "qr")
    else:
        _console().print(f"{target.host}/{target.bot}: no QR code or pairing code pending "
                         f"(connection {link.connection or 'unknown'})")
    sys.exit(ExitCode.OK if link.pending else ExitCode.PROBLEM)
