"""`waops adopt HOST`: read a live host and propose the inventory entries of the Baileys bots already
running there (waops.adoption owns the entry's shape), printed as YAML ready to paste into host_vars.

The host side is waops.adopt_probe, sent over the same SSH connection `waops diagnose` uses and run as
root; it reports what it found and never a secret: a database URL comes back as the name of the variable
holding it, and the proposal puts a vault placeholder in its place."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from waops.adoption import parse
from waops.errors import UsageError, WaopsError

PROBE_SOURCE = Path(__file__).with_name("adopt_probe.py")


@dataclass
class Proposal:
    entry: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # comments above the entry: choices a person confirms
    vault: dict[str, str] = field(default_factory=dict)  # vault variable -> where its value is found


def discover(transport: Any, timeout: float, become: bool) -> dict[str, Any]:
    """Run the probe on the host; its JSON document (schema 1)."""
    cmd = "sudo -n python3 -" if become else "python3 -"
    res = transport.run(cmd, stdin=PROBE_SOURCE.read_bytes(), timeout=timeout)
    try:
        doc = json.loads(res.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = " ".join(res.stderr.decode("utf-8", "replace").split())[:300] or f"exit {res.exit_status}"
        raise WaopsError(f"the adopt probe gave no answer: {why}") from None
    if not isinstance(doc, dict) or doc.get("error"):
        raise WaopsError(str(doc.get("error") if isinstance(doc, dict) else "the adopt probe gave no answer"))
    return doc


def bot_name(raw: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-_") or "bot"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def propose(doc: dict[str, Any]) -> list[Proposal]:
    taken: set[str] = set()
    out = []
    for bot in doc.get("bots") or []:
        name = bot_name(str(bot["name"]), taken)
        p = Proposal({"name": name, "adopted": True})
        where = f"{bot['manager']} {'app' if bot['manager'] == 'pm2' else 'unit'} {bot['name']}"
        p.notes.append(f"{name}: {where}, run by {bot['user']} from {bot['workdir']}"
                       + (" (a git working copy)" if bot.get("git") else "")
                       + f", loads {bot['library']}" + (f" {bot['version']}" if bot.get("version") else "")
                       + ("" if bot.get("running") else "; NOT running now"))
        if bot["manager"] == "pm2":
            p.entry["service"] = {"manager": "pm2", "app": bot["name"], "pm2_home": bot["pm2_home"],
                                  "user": bot["user"]}
        else:
            p.entry["service"] = {"manager": "systemd", "unit": bot["name"], "user": bot["user"]}
        p.entry["workdir"] = bot["workdir"]
        auth: dict[str, Any] = {}
        folders = list(bot.get("folders") or [])
        if folders:
            auth["folder"] = folders[0]
            if len(folders) > 1:
                p.notes.append(f"{name}: other auth folders found (keep the one the bot uses): "
                               + ", ".join(folders[1:]))
        pg = _postgres(name, bot, p)
        if pg:
            auth["postgres"] = pg
        if not auth:
            p.notes.append(f"{name}: no auth folder or auth table found: fill in auth by hand")
        p.entry["auth"] = auth
        if bot.get("logs"):
            p.entry["logs"] = dict(bot["logs"])
        if bot["library"] != "baileys":
            p.entry["library_package"] = bot["library"]
        if bot.get("version"):
            p.entry["library_expected"] = bot["version"]
        out.append(p)
    return out


def _postgres(name: str, bot: dict[str, Any], p: Proposal) -> dict[str, Any] | None:
    found = []
    for db in bot.get("databases") or []:
        if db.get("error"):
            p.notes.append(f"{name}: {db['variable']} ({db['from']}) names a database that could not be read: "
                           f"{db['error']}")
        for t in db.get("tables") or []:
            found.append((not t.get("named_in_code"), db, t))
    if not found:
        return None
    found.sort(key=lambda x: x[0])
    _, db, t = found[0]
    if not t.get("named_in_code"):
        p.notes.append(f"{name}: the bot's code does not name table {t['table']}: check it is this bot's")
    var = f"vault_{name.replace('-', '_')}_pg_dsn"
    p.vault[var] = f"the value of {db['variable']} in {db['from']} of {bot['manager']} {bot['name']}"
    if db.get("sslmode") != "require":
        p.notes.append(f"{name}: {db['variable']} asks for sslmode={db.get('sslmode')}; add ?sslmode=require to "
                       f"the URL in {var} when the database offers TLS")
    scopes = t.get("scopes") or [{"kind": "table"}]
    rows: Any = "table" if scopes[0]["kind"] == "table" else {
        k: v for k, v in scopes[0].items() if k != "kind"}
    if len(scopes) > 1:
        p.notes.append(f"{name}: table {t['table']} holds {len(scopes)} bots' rows ("
                       + ", ".join(json.dumps({k: v for k, v in s.items() if k != 'kind'}) for s in scopes)
                       + "): keep this bot's in rows")
    for _, _, other in found[1:]:
        p.notes.append(f"{name}: another auth table in that database: {other['table']} (not this bot's?)")
    return {"dsn": "{{ " + var + " }}", "table": t["table"], "key_column": t["key_column"],
            "value_column": t["value_column"], "rows": rows}


def render(host: str, proposals: list[Proposal]) -> str:
    """The host_vars YAML, comments first; every entry checked by waops.adoption before it is shown."""
    for p in proposals:
        try:
            parse(host, p.entry)
        except UsageError as exc:  # an entry waops could not fill in: shown, with what is missing
            p.notes.append(f"{p.entry['name']}: incomplete, fill in before provisioning: {exc}")
    lines = [f"# waops adopt {host}: {len(proposals)} Baileys bot(s) found.",
             f"# Paste into host_vars/{host}.yml (merge with an existing waops_bots list), then add the vault",
             "# variables below (ansible-vault edit group_vars/all/vault.yml) and run waops provision.",
             "# Provisioning an adopted bot changes nothing of its code, service, data or pm2 dump."]
    for p in proposals:
        lines += [f"# - {n}" for n in p.notes]
        lines += [f"# vault: {var}: {why}" for var, why in p.vault.items()]
    body = yaml.safe_dump({"waops_bots": [p.entry for p in proposals]}, sort_keys=False, default_flow_style=False,
                          width=120)
    return "\n".join(lines) + "\n" + body


def run(host: Any, timeout: float) -> tuple[dict[str, Any], list[Proposal]]:
    from waops.probe import ssh_factory

    transport = ssh_factory(host, timeout)
    try:
        doc = discover(transport, timeout, become=host.become and host.user not in (None, "root"))
    finally:
        transport.close()
    return doc, propose(doc)
