"""The `waops-host` command line: argparse, one dispatch, JSON or human output per bot."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .backup import do_backup
from .base import (
    AGENT_VERSION,
    AUTH_STORES,
    DEFAULT_CONFIG_DIR,
    DEFAULT_LOCK_DIR,
    DEFAULT_METRICS_FILE,
    DEFAULT_STATE_DIR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    REASONS,
    AgentError,
    iso,
    log,
    now_utc,
)
from .catalog import is_verified, list_backups, recent_backup
from .config import load_configs
from .facts import HostReads, bot_facts, node_version
from .fence import EXIT_FENCED, do_fence, do_unfence, gate, read_fence
from .locks import REPAIR_TTL_S, bot_lock, check_lease, do_repair, lease_holder, read_lease, record_backup_run
from .offhost import cmd_offhost, h_offhost, offhost_after_backup
from .prune import do_prune, do_prune_keys
from .restore import do_reset, do_restore, find_backup
from .schema import FACTS_SCHEMA
from .stores import do_carry, do_migrate
from .verify import verify_backup

if TYPE_CHECKING:
    from .config import BotConfig


def emit(args: argparse.Namespace, doc: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if args.json:
        json.dump(doc, sys.stdout, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human(doc).rstrip("\n") + "\n")


def per_bot(args: argparse.Namespace, configs: list[BotConfig], action: Callable[[BotConfig], dict[str, Any]],
            locked: bool, human: Callable[[dict[str, Any]], str]) -> int:
    results, code = [], EXIT_OK
    for cfg in configs:
        try:
            if locked:
                with bot_lock(cfg, args.lock_dir, args.lock_wait):
                    r = action(cfg)
            else:
                r = action(cfg)
            if not r.get("ok", True):
                code = max(code, EXIT_FAILED)
        except AgentError as e:
            r = {"bot": cfg.name, "ok": False, "error": str(e), "exit_code": e.code}
            code = e.code if code in (EXIT_OK, EXIT_FAILED) and e.code != EXIT_OK else code
            if not args.json:
                log(str(e))
        results.append(r)
    emit(args, {"command": args.cmd, "ok": code == EXIT_OK, "results": results},
         lambda d: "\n".join(human(r) for r in d["results"] if r.get("ok", True) or "error" not in r))
    return code


def h_backup(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['bot']}: backup skipped: {r['why']}"
    return (f"{r['bot']}: backup {r['id']} ({r['reason']}) {'verified' if r['verified'] else 'NOT VERIFIED'}, "
            f"{r['entries']} auth entries, rows={r['rows']}, {r['seconds']}s" + h_offhost_suffix(r))


def h_offhost_suffix(r: dict[str, Any]) -> str:
    oh = r.get("offhost")
    if not oh:
        return ""
    return f", off-host {oh.get('snapshot')}" if oh.get("ok") else f", OFF-HOST COPY FAILED: {oh.get('error')}"


def h_list(r: dict[str, Any]) -> str:
    """Newest first, as `cmd_list` gives them."""
    lines = [f"{r['bot']}: {len(r['backups'])} backups in {r['dir']}"]
    for b in r["backups"]:
        lines.append(f"  {b['id']}  {b['reason']:<11} {b['created_at']}  verified={b['verified']} "
                     f"linked={b['creds_linked']}")
    return "\n".join(lines)


def cmd_list(cfg: BotConfig) -> dict[str, Any]:
    return {"bot": cfg.name, "ok": True, "dir": cfg.backup_dir, "backups": [
        {"id": b["id"], "reason": b["summary"].get("reason"), "created_at": b["summary"].get("created_at"),
         "verified": is_verified(b), "verified_at": (b["verify"] or {}).get("verified_at"),
         "creds_linked": b["summary"].get("creds_linked"), "encrypted": b["summary"].get("encrypted"),
         "library_version": (b["summary"].get("library") or {}).get("version"),
         "release": b["summary"].get("release")}  # an adopted bot's: the git commit it ran
        for b in reversed(list_backups(cfg))]}  # newest first


def cmd_verify(cfg: BotConfig, bid: str | None) -> dict[str, Any]:
    targets = [find_backup(cfg, bid, False)] if bid else list_backups(cfg)
    results = [{"id": b["id"], **verify_backup(cfg, b["path"])} for b in targets]
    return {"bot": cfg.name, "ok": all(r["ok"] for r in results), "backups": results}


def h_verify(r: dict[str, Any]) -> str:
    return "\n".join(f"{r['bot']}: {b['id']} {'ok' if b['ok'] else 'FAILED'} ({b['level']})"
                     + "".join(f"\n    {e}" for e in b["errors"]) for b in r["backups"]) or f"{r['bot']}: no backups"


def cmd_backup(args: argparse.Namespace, cfg: BotConfig) -> dict[str, Any]:
    """One backup of the bot (cron, a repair, or the bot's keep-alive request), under the bot's lock."""
    if read_fence(cfg) is not None:  # a stale session must not reach the shared repository
        return {"bot": cfg.name, "ok": True, "skipped": True, "id": None, "reason": args.reason,
                "verified": False, "why": "the bot is fenced here (moved to another host)"}
    lease = read_lease(cfg, args.lock_dir)
    if lease is not None and lease["owner"] != args.owner:  # the repair backs up itself
        log(f"{cfg.name}: backup skipped: {lease_holder(lease)}")
        return {"bot": cfg.name, "ok": True, "skipped": True, "id": None, "reason": args.reason,
                "verified": None, "entries": None, "rows": None, "seconds": 0.0,
                "why": lease_holder(lease)}
    recent = recent_backup(cfg, args.reason, args.min_interval)
    if recent is not None:
        return recent
    try:
        r = do_backup(cfg, args.reason)
    except AgentError as e:
        record_backup_run(cfg, args.lock_dir, args.reason, None, str(e))
        raise
    record_backup_run(cfg, args.lock_dir, args.reason, r["id"],
                      None if r["ok"] else "did not verify: " + "; ".join(r["errors"][:3]))
    r = offhost_after_backup(cfg, r)  # before local retention: never loses a local copy
    if args.prune and r.get("verified"):
        r["prune"] = do_prune(cfg, None, False)
    return r


def cmd_facts(args: argparse.Namespace, configs: list[BotConfig]) -> int:
    node = node_version()
    host = HostReads(configs)
    doc = {"schema": FACTS_SCHEMA, "host": socket.gethostname(), "collected_at": iso(now_utc()),
           "agent_version": AGENT_VERSION, "bots": [bot_facts(cfg, node, host) for cfg in configs]}
    # facts is a machine document either way; without --json it is indented for a human
    json.dump(doc, sys.stdout, indent=None if args.json else 1)
    sys.stdout.write("\n")
    return EXIT_OK


def seconds(text: str) -> float:
    """A number of seconds >= 0 (argparse applies it to the environment default too)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 (also WAOPS_LOCK_WAIT)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), not the usage block first."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bot", help="bot name (default: every bot in --config-dir)")
    common.add_argument("--config-dir", default=os.environ.get("WAOPS_CONFIG_DIR", DEFAULT_CONFIG_DIR),
                        help="per-bot agent configs (env WAOPS_CONFIG_DIR, default %(default)s)")
    common.add_argument("--lock-dir", default=os.environ.get("WAOPS_LOCK_DIR", DEFAULT_LOCK_DIR),
                        help="where the per-bot flock files live (env WAOPS_LOCK_DIR)")
    common.add_argument("--lock-wait", type=seconds, default=os.environ.get("WAOPS_LOCK_WAIT", "120"),
                        help="seconds to wait for a busy lock before exit 75 (env WAOPS_LOCK_WAIT)")
    common.add_argument("--json", action="store_true", help="JSON on stdout")
    common.add_argument("--owner", help="the repair lease this run belongs to (`repair begin --owner ID`)")
    p = Parser(prog="waops-host", description="waops host agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("facts", parents=[common], help="facts JSON for the controller")
    b = sub.add_parser("backup", parents=[common], help="back up the session (auth folder and/or DB rows)")
    b.add_argument("--reason", default="manual", choices=REASONS)
    b.add_argument("--prune", action="store_true", help="apply retention after a verified backup")
    b.add_argument("--min-interval", type=float, default=0.0, metavar="SECONDS",
                   help="skip when a backup with the same reason is younger than this (requests made by the bot)")
    v = sub.add_parser("verify", parents=[common], help="recompute checksums of one or all backups")
    v.add_argument("id", nargs="?")
    sub.add_parser("list", parents=[common], help="list complete backups")
    r = sub.add_parser("restore", parents=[common], help="restore a backup (stop the bot first)")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("id", nargs="?")
    g.add_argument("--latest-verified", action="store_true")
    pr = sub.add_parser("prune", parents=[common], help="retention: keep the last N backups")
    pr.add_argument("--keep", type=positive_int, help="how many to keep (>= 1; default backup_keep)")
    pr.add_argument("--dry-run", action="store_true")
    pk = sub.add_parser("prune-keys", parents=[common], help="drop broken sessions, stale pre-/sender-keys")
    pk.add_argument("--sessions", choices=("broken", "all"))
    pk.add_argument("--dry-run", action="store_true")
    sub.add_parser("reset", parents=[common], help="clear this bot's session (after a verified backup)")
    rp = sub.add_parser("repair", parents=[common], help="the bot's repair lease: begin, renew or end it")
    rp.add_argument("action", choices=("begin", "renew", "end"))
    rp.add_argument("--ttl", type=float, default=REPAIR_TTL_S, metavar="SECONDS",
                    help="the lease expires this long after begin/renew unless renewed (default %(default)s)")
    mg = sub.add_parser("migrate", parents=[common], help="copy the session to another store (bot stopped)")
    mg.add_argument("--to", choices=AUTH_STORES, help="the store to copy into (required without --from-dir)")
    mg.add_argument("--from-dir", metavar="DIR",
                    help="copy from the store of this bot's config in DIR (the adopted layout kept aside by a move "
                         "into the managed layout) into the store of its current config")
    oh = sub.add_parser("offhost", parents=[common], help="off-host copies in the bot's restic repository")
    oh.add_argument("action", choices=("init", "push", "check", "list", "fetch", "claim", "owner"))
    oh.add_argument("id", nargs="?", help="backup id (push: default newest verified; fetch: newest verified "
                                          "linked); claim: the owner host (default this one)")
    fe = sub.add_parser("fence", parents=[common], help="the bot moved away: stop it here for good (masked)")
    fe.add_argument("--moved-to", dest="moved_to", metavar="HOST", help="the host the bot moved to")
    uf = sub.add_parser("unfence", parents=[common], help="undo fence (a move rolled back)")
    uf.add_argument("--start", action="store_true", help="start the bot again")
    sub.add_parser("gate", parents=[common], help="exit 0 when the bot may start on this host (ExecStartPre)")
    c = sub.add_parser("check", parents=[common], help="scheduled health check, alerts and metrics")
    c.add_argument("--state-dir", default=os.environ.get("WAOPS_STATE_DIR", DEFAULT_STATE_DIR),
                   help="check state (open incidents, undelivered alerts) (env WAOPS_STATE_DIR)")
    c.add_argument("--metrics-file", default=os.environ.get("WAOPS_METRICS_FILE", DEFAULT_METRICS_FILE),
                   help="node_exporter textfile; '' turns metrics off (env WAOPS_METRICS_FILE)")
    c.add_argument("--now", help="evaluate as if it were this ISO 8601 time (tests of the clock)")
    c.add_argument("--quick", action="store_true",
                   help="the session and crash-loop conditions only, from the process and the health file "
                        "(the every-minute run; no metrics)")
    k = sub.add_parser("keepalive", parents=[common],
                       help="answer one request on the bot's keep-alive socket (stdin): a backup, or a "
                            "connection close the bot reports (run by the socket unit)")
    k.add_argument("--prune", action="store_true", help="apply retention after a verified backup")
    k.add_argument("--min-interval", type=float, default=0.0, metavar="SECONDS",
                   help="skip a backup when a keep-alive backup is younger than this")
    k.add_argument("--state-dir", default=os.environ.get("WAOPS_STATE_DIR", DEFAULT_STATE_DIR),
                   help="check state (env WAOPS_STATE_DIR)")
    k.set_defaults(reason="keepalive", metrics_file="", now=None, quick=True)
    return p


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    try:
        configs = load_configs(args.config_dir, args.bot)
        if args.cmd == "check":
            from . import check  # the scheduled check's modules load only for it

            return check.main(args, configs)
        if args.cmd == "facts":
            return cmd_facts(args, configs)
        if args.cmd == "backup":
            return per_bot(args, configs, lambda c: cmd_backup(args, c), True, h_backup)
        if args.cmd == "keepalive":
            from . import report  # the keep-alive socket's requests (backup or a reported close)

            return report.main(args, configs)
        if args.cmd == "list":
            return per_bot(args, configs, cmd_list, False, h_list)
        if args.cmd == "fence":
            return per_bot(args, configs, lambda c: do_fence(c, args.moved_to, "fenced by hand or by a move"), True,
                           lambda r: f"{r['bot']}: fenced (owner {r['owner']})" + "".join(
                               f"\n    {e}" for e in r["errors"]))
        if args.cmd == "unfence":
            return per_bot(args, configs, lambda c: do_unfence(c, args.start), True,
                           lambda r: f"{r['bot']}: unfenced" + "".join(f"\n    {e}" for e in r["errors"]))
        if args.cmd == "gate":
            rc = per_bot(args, configs, gate, False, lambda r: f"{r['bot']}: {r['why']}")
            return EXIT_FENCED if rc == EXIT_FAILED else rc
        if args.cmd == "offhost":
            return per_bot(args, configs, lambda c: cmd_offhost(c, args.action, args.id),
                           args.action in ("push", "fetch"), h_offhost)
        if args.cmd == "verify":
            return per_bot(args, configs, lambda c: cmd_verify(c, args.id), True, h_verify)
        if args.cmd == "repair":
            if not args.owner:
                raise AgentError("repair: --owner ID is required", EXIT_USAGE)
            return per_bot(args, configs, lambda c: do_repair(c, args.action, args.owner, args.ttl, args.lock_dir,
                                                              args.lock_wait), False,
                           lambda r: f"{r['bot']}: repair lease {'held by ' + r['owner'] if r['held'] else 'ended'}"
                                     + (f" until {r['expires_at']}" if r["held"] else ""))

        def leased(fn: Callable[[BotConfig], dict[str, Any]]) -> Callable[[BotConfig], dict[str, Any]]:
            def run(cfg: BotConfig) -> dict[str, Any]:  # a destructive step belongs to the lease holder, or to none
                check_lease(cfg, args.lock_dir, args.owner)
                return fn(cfg)
            return run

        if args.cmd == "restore":
            return per_bot(args, configs, leased(lambda c: do_restore(c, args.id, args.latest_verified)), True,
                           lambda r: f"{r['bot']}: restored {r['id']} (pre-restore backup "
                                     f"{r['pre_restore_backup']})")
        if args.cmd == "prune":
            return per_bot(args, configs, lambda c: do_prune(c, args.keep, args.dry_run), True,
                           lambda r: f"{r['bot']}: deleted {len(r['deleted'])}, kept {len(r['kept'])}")
        if args.cmd == "prune-keys":
            return per_bot(args, configs, leased(lambda c: do_prune_keys(c, args.sessions, args.dry_run)), True,
                           lambda r: f"{r['bot']}: removed files {r['files_removed']}, rows {r['db_removed']}")
        if args.cmd == "migrate" and args.from_dir:
            return per_bot(args, configs, leased(lambda c: do_carry(c, load_configs(args.from_dir, c.name)[0])),
                           True, lambda r: f"{r['bot']}: carried {r['keys']} keys from the {r['from']} store to "
                                           f"{r['to']} (backup {r['pre_migrate_backup']})")
        if args.cmd == "migrate":
            if not args.to:
                raise AgentError("migrate needs --to STORE (or --from-dir DIR)", EXIT_USAGE)
            return per_bot(args, configs, leased(lambda c: do_migrate(c, args.to)), True,
                           lambda r: f"{r['bot']}: migrated {r['keys']} keys from {r['from']} to {r['to']} "
                                     f"(pre-migrate backup {r['pre_migrate_backup']})")
        if args.cmd == "reset":
            return per_bot(args, configs, leased(do_reset), True,
                           lambda r: f"{r['bot']}: reset ({r['files_removed']} entries, rows "
                                     f"{r['rows_deleted']}); pre-reset backup {r['pre_reset_backup']}")
    except AgentError as e:
        log(str(e))
        return e.code
    except BrokenPipeError:
        raise  # stdout went away: handled quietly below
    except OSError as e:
        log(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_USAGE


def run() -> int:
    """The launcher's entry point: main() with stdout's reader allowed to go away."""
    # SIGPIPE stays ignored (Python's default): a dead `age` must surface as an error we clean up after,
    # not kill us with a half-written backup.
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:  # stdout closed by the reader (`| head`)
        rc = EXIT_FAILED
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return rc
