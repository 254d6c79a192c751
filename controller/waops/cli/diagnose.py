"""`waops diagnose`: thin. The App's settings -> waops.probe / waops.diagnose -> table or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from waops import config
from waops.cli.app import App, global_options, pass_app
from waops.errors import ExitCode, UsageError

HELP_EPILOG = """\b
Examples:
  waops diagnose -i inventories/prod --all
  waops diagnose -i inventories/prod bot-1 --bot shop --output json
  waops diagnose --log-file shop-out.log --output json      (no host needed)
\b
Output: a table on stderr for people; with --output json one document on stdout:
  {"schema": 1, "results": [{"host", "bot", "file", "reachable", "error", "fingerprint",
                             "cause", "code", "evidence", "confidence", "started_at", "facts"}]}
\b
Exit codes:
  0  every bot (or log) is healthy
  1  a problem was found (or the cause is unknown)
  2  usage error: bad flags, no or malformed inventory, unreadable log file or config
  3  a host was unreachable or its SSH host key was refused (the row shows the fingerprint)
\b
Settings (flag > WAOPS_<NAME> env > waops.toml > default): inventory, output, concurrency, timeout,
log_window_bytes, health_fresh_s, bad_mac_flood, files_warning, files_emergency, db_rows_warning,
db_rows_emergency. --show-settings prints each value and where it came from."""


@click.command(epilog=HELP_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("hosts", nargs=-1)
@click.option("--all", "all_hosts", is_flag=True, help="Every host of the inventory.")
@click.option("--bot", "bots", multiple=True, help="Only these bots (repeatable).")
@click.option("--log-file", "log_files", multiple=True, type=click.Path(dir_okay=True),
              help="Diagnose a saved log instead of a host (repeatable; - reads a piped log from stdin).")
@click.option("--window", "log_window_bytes", type=int, default=None,
              help="Bytes read from the end of a log file [env WAOPS_LOG_WINDOW_BYTES].")
@click.option("--show-settings", is_flag=True, help="Print every setting and its source, then exit.")
@global_options("inventory", "output", "timeout", "concurrency")
@pass_app
def diagnose(app: App, hosts: tuple[str, ...], all_hosts: bool, bots: tuple[str, ...], log_files: tuple[str, ...],
             log_window_bytes: int | None, show_settings: bool) -> None:
    """Read hosts live over SSH (or a saved log) and name the cause for every bot."""
    app.set("log_window_bytes", log_window_bytes)
    s = app.settings
    if show_settings:
        for name, value, source in s.explain():
            click.echo(f"{name} = {value!r}  ({source})")
        if s.inventory:
            from waops import inventory as inv

            inv.load(s.inventory, ["all"])
            why = f": {inv.last_read.why}" if inv.last_read.why else " (plain YAML/INI, Ansible not loaded)"
            click.echo(f"inventory reader = {inv.last_read.reader!r}{why}")
        return
    if log_files:
        if hosts or all_hosts:
            raise UsageError("--log-file diagnoses a saved log; do not name hosts with it")
        rows = _logs(log_files, s)
        code = ExitCode.OK if all(r["cause"] == "healthy" for r in rows) else ExitCode.PROBLEM
    else:
        if not hosts and not all_hosts:
            raise UsageError("name hosts (or groups), or use --all, or --log-file FILE")
        rows, code = _hosts(app, hosts, all_hosts, bots)
    if s.output == "json":
        click.echo(json.dumps({"schema": 1, "results": rows}, indent=2, default=str))
    else:
        _table(rows)
    sys.exit(code)


def _logs(files: tuple[str, ...], s: config.Settings) -> list[dict[str, Any]]:
    from waops.diagnose import diagnose_log
    from waops.logparse import read_log

    rows = []
    for f in files:
        records = read_log(f, s.log_window_bytes)
        d = diagnose_log(records, s)
        rows.append({"host": None, "bot": None, "file": f, "reachable": True, "error": None, "fingerprint": None,
                     **d.to_dict(), "facts": {"records": len(records)}})
    return rows


def _hosts(app: App, names: tuple[str, ...], all_hosts: bool, bots: tuple[str, ...]
           ) -> tuple[list[dict[str, Any]], int]:
    from waops import duplicates, inventory, probe

    s = app.settings
    hosts = inventory.load(app.inventory(), ["all"] if all_hosts else list(names))
    factory = app.transport_factory or probe.ssh_factory  # tests pass their own
    progress = _progress(len(hosts)) if s.output == "table" else None
    warm = ("rich.console", "rich.table", "rich.markup") if s.output == "table" else ()
    reports = probe.probe_hosts(hosts, s, factory, bots, on_done=progress, warm=warm)
    duplicates.annotate(reports)  # one device on several hosts: named on each
    rows: list[dict[str, Any]] = []
    for r in reports:
        base = {"host": r.host, "file": None, "reachable": r.reachable, "error": r.error,
                "fingerprint": r.fingerprint}
        if not r.reachable or not r.bots:
            # one label for an unreachable host in JSON and in the table
            rows.append({**base, "bot": None, "cause": "unknown" if r.reachable else "unreachable", "code": None,
                         "evidence": [r.error or "no bot on this host"], "confidence": 0.0, "started_at": None,
                         "rule": None, "facts": None})
        rows.extend({**base, **b.to_dict()} for b in r.bots)
    return rows, probe.exit_code(reports)


def _progress(total: int) -> Any:
    done = [0]

    def on_done(r: Any) -> None:
        done[0] += 1
        state = "ok" if r.reachable else "unreachable"
        click.echo(f"[{done[0]}/{total}] {r.host}: {state} ({r.elapsed_s:.1f}s)", err=True)

    return on_done


STYLE = {"healthy": "green", "unknown": "yellow", "rate_limited": "magenta", "banned": "magenta"}


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=True)
    for col in ("host / file", "bot", "cause", "code", "conf.", "evidence"):
        t.add_column(col, overflow="fold")
    for r in rows:
        where = r["host"] or r["file"] or ""
        if not r["reachable"]:
            cause = f"[red]{r['cause']}[/]"
            ev = r["error"] or ""
            if r.get("fingerprint"):
                ev += f"\nfingerprint: {r['fingerprint']}"
        else:
            style = STYLE.get(r["cause"], "red")
            cause = f"[{style}]{r['cause']}[/]"
            ev = "\n".join(str(e) for e in (r.get("evidence") or [])[:4])
        t.add_row(where, r.get("bot") or "", cause, str(r.get("code") or ""), f"{r.get('confidence', 0):.2f}",
                  _escape(ev))
    Console(stderr=True, soft_wrap=False).print(t)
    sys.stderr.flush()


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(s)
