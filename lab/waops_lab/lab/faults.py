"""Fault injection by cause name (`waops lab fault HOST CAUSE`).

Faults of the WhatsApp side are set in the simulator. Faults that live on the host are made there the
way they happen in real life: a creds file cut short by a crash mid-write, a stopped process, a bad
release, a second copy of the bot started by hand. Nothing here edits logs or facts the controller reads."""

from __future__ import annotations

import json
import shlex

from waops_lab.errors import LabError
from waops_lab.lab.core import Lab, LabHost

SIMULATOR_CAUSES = {"logged_out", "corrupt_keys", "network", "banned", "rate_limited", "client_outdated",
                    "file_bloat"}
HOST_CAUSES = {"creds_lost", "process_down", "crash", "library_mismatch", "conflict"}
# Not causes of their own: host changes that lead to one (a release on a known-bad library version).
HOST_CHANGES = {"known_bad_version"}
ALL_CAUSES = SIMULATOR_CAUSES | HOST_CAUSES | HOST_CHANGES | {"clear"}

# The vendored Baileys build that only `import` can load (the sandbox also vendors loadable ones).
ESM_ONLY_VERSION = "7.0.0-rc.9"
KNOWN_BAD_VERSION = "6.7.20"  # 405 outages when WhatsApp rotated its web version (docs/DOMAIN.md)
STRAY_MARKER = "waops-lab-stray"  # argv marker of the second instance, so `clear` can find it


def inject(lab: Lab, host_name: str, cause: str, bot_name: str | None = None) -> str:
    if cause not in ALL_CAUSES:
        raise LabError(f"unknown cause {cause!r}; one of: {', '.join(sorted(ALL_CAUSES))}")
    host = lab.host(host_name)
    bot = _bot(host, bot_name)
    if cause in SIMULATOR_CAUSES or cause == "clear":
        from waops_lab.sandbox.client import SimulatorClient

        client = SimulatorClient(lab.control_url)
        if cause == "clear":
            client.clear(bot["phone"])
            lab.ssh(host, f"pkill -f {STRAY_MARKER} || true")
            return f"{host.name}/{bot['name']}: faults cleared"
        client.fault(bot["phone"], cause)
        return f"{host.name}/{bot['name']}: simulator fault {cause} set for {bot['phone']}"
    config = _agent_config(lab, host, bot["name"])
    lab.ssh(host, _HOST_FAULTS[cause](config), check=True, timeout=180)
    return f"{host.name}/{bot['name']}: {cause} made on the host"


def _bot(host: LabHost, name: str | None) -> dict:
    for bot in host.bots:
        if name in (None, bot["name"]):
            return bot
    raise LabError(f"{host.name} has no bot {name!r}")


def _agent_config(lab: Lab, host: LabHost, bot: str) -> dict:
    raw = lab.ssh(host, f"cat /etc/waops/bots/{shlex.quote(bot)}.json")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise LabError(f"{host.name}: bot {bot} is not provisioned (no /etc/waops/bots/{bot}.json)") from exc


def _service(cfg: dict, action: str) -> str:
    if cfg["service_manager"] == "systemd":
        return f"systemctl {action} {shlex.quote(cfg['service_name'])}"
    return (f"runuser -u {shlex.quote(cfg['user'])} -- env PM2_HOME={shlex.quote(cfg['pm2_home'])} "
            f"pm2 {action} {shlex.quote(cfg['service_name'])} >/dev/null")


def _process_down(cfg: dict) -> str:
    return _service(cfg, "stop")


def _creds_lost(cfg: dict) -> str:
    # A crash in the middle of writing creds: the file (or row) is cut short, then the bot restarts.
    if cfg["auth_store"] == "postgres":
        pg = cfg["postgres"]
        # On stdin: psql interpolates :'s' (a quoted literal) there, never in `-c` (psql's own rule).
        sql = f"DELETE FROM {_ident(pg.get('table', 'baileys_auth'))} WHERE session = :'s' AND key = 'creds';"
        conn = (f"PGPASSFILE={shlex.quote(pg['password_file'])} PGHOST={shlex.quote(pg['host'])} "
                f"PGPORT={int(pg['port'])} PGDATABASE={shlex.quote(pg['dbname'])} PGUSER={shlex.quote(pg['user'])}")
        psql = f"psql -v ON_ERROR_STOP=1 -q -v s={shlex.quote(pg['session'])}"
        delete = f"printf '%s\\n' {shlex.quote(sql)} | {conn} {psql}"
        return f"{delete} && {_service(cfg, 'restart')}"
    if cfg["auth_store"] == "sqlite":
        # The creds row gone from the bot's database, deleted as the bot user. The bot is stopped first:
        # a running sandbox bot writes its whole in-memory database back on the next change.
        sq = cfg.get("sqlite") or {}
        path = sq.get("path") or f"/var/lib/waops/bots/{cfg['name']}/auth.db"
        code = (f"import sqlite3; c = sqlite3.connect({path!r}); "
                f"c.execute('DELETE FROM {_ident(sq.get('table', 'baileys_auth'))} WHERE key = ?', ('creds',)); "
                "c.commit()")
        delete = f"runuser -u {shlex.quote(cfg['user'])} -- python3 -c {shlex.quote(code)}"
        return f"{_service(cfg, 'stop')} && {delete} && {_service(cfg, 'start')}"
    creds = shlex.quote(cfg["auth_dir"] + "/creds.json")
    return f"truncate -s 37 {creds} && {_service(cfg, 'restart')}"


def _new_release(cfg: dict, suffix: str, change: str) -> str:
    """Copy the current release to a new one, apply CHANGE inside it, switch `current`, restart."""
    root = shlex.quote(cfg["release_root"])
    return (f"set -e; cd {root}; cur=$(readlink -f current); new=releases/$(date +%Y%m%dT%H%M%S)-{suffix}; "
            f"cp -a \"$cur\" \"$new\"; (cd \"$new\" && {change}); "
            f"chown -R {shlex.quote(cfg['user'])}: \"$new\"; ln -sfn \"${{new#./}}\" current.tmp; "
            f"mv -T current.tmp current; {_service(cfg, 'restart')} || true")  # a unit that fails to start IS the fault


def _crash(cfg: dict) -> str:
    # A deploy whose start-up code throws: the process crash-loops under its manager.
    change = ("sed -i '1i const __cfg = JSON.parse(process.env.WAOPS_BOT_SETTINGS);' index.js")
    return _new_release(cfg, "crash", change)


def _library_mismatch(cfg: dict) -> str:
    # An upgrade to an ESM-only Baileys in a CommonJS bot (what 6.7.19+/7.x do to `require`).
    package = shlex.quote(cfg.get("library_package", "baileys"))
    change = (f"test -d vendor/baileys-{ESM_ONLY_VERSION}; "
              f"rm -rf node_modules/{package}; ln -s ../vendor/baileys-{ESM_ONLY_VERSION} node_modules/{package}")
    return _new_release(cfg, "upgrade", change)


def _known_bad_version(cfg: dict) -> str:
    # A deploy that pins a release known to break: it loads and connects today (WhatsApp has not rotated
    # yet). Built from the vendored loadable copy, with the version it claims.
    package = shlex.quote(cfg.get("library_package", "baileys"))
    vendored = f"vendor/baileys-{KNOWN_BAD_VERSION}"
    change = (f"src=$(readlink -f node_modules/{package}); rm -rf {vendored}; cp -a \"$src\" {vendored}; "
              f"sed -i 's/\"version\": *\"[^\"]*\"/\"version\": \"{KNOWN_BAD_VERSION}\"/' {vendored}/package.json; "
              f"rm -rf node_modules/{package}; ln -s ../{vendored} node_modules/{package}")
    return _new_release(cfg, "known-bad", change)


def _conflict(cfg: dict) -> str:
    # Someone starts a second copy by hand on the same credentials (the classic 440 loop).
    env_file = f"/etc/waops/bots/{cfg['name']}.env"
    inner = (f"set -a; . {shlex.quote(env_file)}; set +a; cd {shlex.quote(cfg['release_root'])}/current; "
             f"exec -a 'node index.js {STRAY_MARKER}' node index.js")
    return (f"setsid runuser -u {shlex.quote(cfg['user'])} -- bash -c {shlex.quote(inner)} "
            f"> /dev/null 2>&1 < /dev/null & sleep 0.5")


def _ident(name: str) -> str:
    """A SQL identifier from the agent config, quoted (the table name cannot be a bound parameter)."""
    return '"' + name.replace('"', '""') + '"'


_HOST_FAULTS = {
    "process_down": _process_down,
    "creds_lost": _creds_lost,
    "crash": _crash,
    "library_mismatch": _library_mismatch,
    "conflict": _conflict,
    "known_bad_version": _known_bad_version,
}
