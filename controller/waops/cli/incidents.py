"""`waops incidents list|show` and `waops mttr report`: tables on stderr, JSON on stdout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from waops.cli.app import App, global_options, pass_app
from waops.errors import UsageError
from waops.incidents import Incident, connect
from waops.model import OUTCOMES
from waops.mttr import TARGET_S, format_duration, report

_since = click.option(
    "--since", metavar="WHEN", default=None, help="Only incidents started since: ISO 8601 time or 7d / 12h / 30m."
)


def _parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1:] in units and text[:-1].isdigit():
        try:
            return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
        except (OverflowError, ValueError):  # before year 1: not a useful bound
            raise UsageError(f"--since: {text} reaches back before year 1") from None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: not a time or a duration: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def _console():  # rich loads only when a table is drawn
    from rich.console import Console

    return Console(stderr=True)


def _when(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group()
def incidents() -> None:
    """List and show recorded incidents."""


@incidents.command("list")
@_since
@click.option("--host", default=None, help="Only this host.")
@click.option("--bot", default=None, help="Only this bot.")
@click.option("--cause", default=None, help="Only this cause.")
@click.option("--outcome", type=click.Choice(OUTCOMES), default=None, help="Only this outcome.")
@click.option("--open", "open_only", is_flag=True, help="Only incidents not closed yet.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@global_options("store", "output")
@pass_app
def list_(
    app: App,
    since: str | None,
    host: str | None,
    bot: str | None,
    cause: str | None,
    outcome: str | None,
    open_only: bool,
    limit: int,
) -> None:
    """Recorded incidents, newest first."""
    when = _parse_since(since)  # bad input is refused before the store is opened (or created)
    with connect(app.store) as s:
        found = s.list(host=host, bot=bot, cause=cause, outcome=outcome, since=when,
                       open_only=open_only, limit=limit)  # fmt: skip
    if app.output == "json":
        _json([i.to_dict() for i in found])
        return
    from rich.table import Table

    table = Table(title=f"incidents ({len(found)})")
    for col in ("id", "started", "host", "bot", "cause", "code", "outcome", "MTTR", "human wait"):
        table.add_column(col)
    for i in found:
        table.add_row(
            str(i.id), _when(i.started_at), i.host, i.bot, i.cause, "-" if i.code is None else str(i.code),
            i.outcome or "open", format_duration(i.mttr_s), format_duration(i.human_wait_s or None),
        )  # fmt: skip
    _console().print(table)


@incidents.command("show")
@click.argument("incident_id", metavar="ID", type=int)
@global_options("store", "output")
@pass_app
def show(app: App, incident_id: int) -> None:
    """One incident with its steps and evidence."""
    with connect(app.store) as s:
        inc = s.get(incident_id)
    if inc is None:
        raise UsageError(f"no incident {incident_id}")
    if app.output == "json":
        _json(inc.to_dict())
        return
    _render_incident(inc)


def _render_incident(inc: Incident) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]incident {inc.id}[/bold]  {inc.host}/{inc.bot}  cause [bold]{inc.cause}[/bold]"
                  f"{'' if inc.code is None else f' (code {inc.code})'}  outcome {inc.outcome or 'open'}"
                  f"  trigger {inc.trigger}")  # fmt: skip
    console.print(
        f"started {_when(inc.started_at)}  detected {_when(inc.detected_at)}  resolved {_when(inc.resolved_at)}"
    )
    console.print(
        f"MTTR {format_duration(inc.mttr_s)}  excluding human wait {format_duration(inc.mttr_excl_human_s)}"
        f"  human wait {format_duration(inc.human_wait_s)}"
    )
    steps = Table(title="steps")
    for col in ("step", "started", "ended", "result", "detail"):
        steps.add_column(col)
    for st in inc.steps:
        steps.add_row(st.name, _when(st.started_at), _when(st.ended_at), st.result, st.detail)
    console.print(steps)
    evidence = inc.evidence if isinstance(inc.evidence, list) else [inc.evidence]
    if evidence:
        console.print("[bold]evidence[/bold]")
        for e in evidence:
            # markup=False: log lines contain brackets that rich would read as styles
            console.print(f"  {e if isinstance(e, str) else json.dumps(e)}", markup=False)


@click.group()
def mttr() -> None:
    """MTTR per cause against the 15-minute target."""


@mttr.command("report")
@click.option(
    "--output", "-o", "report_output", envvar="WAOPS_OUTPUT", type=click.Choice(["table", "json", "prometheus"]),
    default=None,
    help="table on stderr, json on stdout, or prometheus: text format on stdout for node_exporter's textfile "
    "collector [env WAOPS_OUTPUT; default table].",
)  # fmt: skip
@_since
@click.option("--host", default=None, help="Only this host.")
@click.option("--bot", default=None, help="Only this bot.")
@click.option(
    "--target-min", type=click.FloatRange(min=0, min_open=True), default=TARGET_S / 60, show_default=True,
    help="Target MTTR in minutes.",
)  # fmt: skip
@global_options("store")
@pass_app
def report_(
    app: App, report_output: str | None, since: str | None, host: str | None, bot: str | None, target_min: float
) -> None:
    """Median and p90 MTTR (resolved_at - started_at) per cause, also excluding time waiting for a person.

    \b
    For Prometheus (node_exporter's textfile collector on the controller, e.g. from cron):
      waops mttr report --since 30d -o prometheus > DIR/waops_incidents.prom.tmp \\
        && mv DIR/waops_incidents.prom.tmp DIR/waops_incidents.prom
    """
    # its own --output: prometheus besides the global table|json (given before the command)
    output = report_output or app.output
    when = _parse_since(since)
    with connect(app.store) as s:
        found = s.list(host=host, bot=bot, since=when, limit=None)
    rows = report(found, target_s=target_min * 60)
    if output == "prometheus":
        from waops.mttr_metrics import render

        click.echo(render(found, rows, target_min * 60, datetime.now(UTC)), nl=False)
        return
    if output == "json":
        _json({"target_s": target_min * 60, "causes": [r.to_dict() for r in rows]})
        return
    from rich.table import Table

    table = Table(title=f"MTTR against the {target_min:g}-minute target")
    for col in ("cause", "incidents", "repaired", "median", "p90", "median excl. human", "p90 excl. human",
                "within target", "p90 ok"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        ok = {None: "-", True: "[green]yes[/green]", False: "[red]no[/red]"}[r.meets_target]
        table.add_row(
            f"[bold]{r.cause}[/bold]" if r.cause == "all" else r.cause, str(r.incidents), str(r.repaired),
            format_duration(r.median_s), format_duration(r.p90_s), format_duration(r.median_excl_human_s),
            format_duration(r.p90_excl_human_s), f"{r.within_target}/{r.repaired}", ok,
        )  # fmt: skip
    _console().print(table)
