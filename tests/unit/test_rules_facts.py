"""diagnose(facts): one facts document per rule of the facts-based classifier (CONTRACTS.md shape)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from waops.config import Settings
from waops.diagnose import diagnose, diagnose_document, records_from_logs

OPEN = '{"level":30,"time":"2026-11-22T07:00:00.000Z","msg":"opened connection to WA"}'
L401 = '{"level":30,"time":"2026-11-22T06:00:00.000Z","msg":"connection closed","err":{"output":{"statusCode":401}}}'
L405 = '{"level":30,"time":"2026-11-22T07:10:00.000Z","msg":"connection closed","err":{"output":{"statusCode":405}}}'
ESM = "Error [ERR_REQUIRE_ESM]: require() of ES Module /opt/waops/bots/shop/current/node_modules/baileys/lib/index.js"
BAD_MAC = "Session error:Error: Bad MAC Error: Bad MAC"
RATE = ('{"level":50,"time":"2026-11-22T07:00:10.000Z","err":{"type":"Boom","message":"rate-overlimit",'
        '"data":429,"output":{"statusCode":500}},"data":429,"msg":"failed to send reply"}')
OLD_RATE = RATE.replace("07:00:10", "05:00:10")
CRASH = ['SyntaxError: "undefined" is not valid JSON', "    at JSON.parse (<anonymous>)", "Node.js v20.20.2",
         "waops-bot-shop.service: Main process exited, code=exited, status=1/FAILURE"]
NOT_EXPORTED = ('Error [ERR_PACKAGE_PATH_NOT_EXPORTED]: No "exports" main defined in '
                "/opt/waops/bots/shop/current/node_modules/baileys/package.json")
LINKED_BACKUP = {"count": 1, "latest": {"id": "b1", "verified": True, "creds_linked": True, "age_s": 60},
                 "latest_restorable": {"id": "b1", "verified": True, "creds_linked": True, "age_s": 60}}
PG_FRESH_CREDS = {"store": "postgres", "db": {"reachable": True, "rows": 3, "by_type": {},
                                              "creds": {"present": True, "parses": True, "linked": False}}}
SYSTEMD_LOOP = {"manager": "systemd", "status": "activating", "sub_state": "auto-restart", "restarts": 3,
                "instances": 0, "pid": None, "exit_code": 1}


def healthy_bot() -> dict[str, Any]:
    return {
        "bot": "shop",
        "process": {"manager": "pm2", "status": "online", "restarts": 0, "unstable_restarts": 0, "uptime_s": 3600,
                    "instances": 1, "pid": 123, "exit_code": None},
        "health": {"schema": 1, "bot": "shop", "connection": "open", "last_disconnect": None,
                   "updated_at": "2026-11-22T07:00:00Z", "age_s": 30,
                   "library": {"name": "baileys", "version": "6.7.18"}},
        "logs": {"source": "pm2", "window_bytes": 262144, "lines_scanned": 10,
                 "matched": [{"time": "2026-11-22T07:00:00.000Z", "stream": "out", "text": OPEN, "code": None}],
                 "tail": [OPEN]},
        "auth": {"store": "files", "file_count": 120, "by_type": {"pre-key": 90, "session": 29},
                 "creds": {"present": True, "parses": True, "linked": True, "me_id": "x", "mtime": None},
                 "db": None},
        "backups": {"count": 2, "latest": {"id": "b1", "created_at": "2026-11-22T06:00:00Z", "reason": "cron",
                                           "verified": True, "age_s": 3600, "creds_linked": True}},
        "library": {"package": "baileys", "installed": "6.7.18", "expected": "6.7.18", "known_bad": False,
                    "release": "r2", "previous_release": "r1"},
        "node": {"version": "v20.18.3"},
        "disk": {"path": "/var/lib/waops", "free_bytes": 10**10, "free_pct": 40.0},
    }


def bot(**changes: Any) -> dict[str, Any]:
    """healthy_bot() with dotted-path changes: bot(**{"process.status": "stopped"})."""
    b = copy.deepcopy(healthy_bot())
    for path, value in changes.items():
        cur = b
        *parents, leaf = path.split(".")
        for p in parents:
            cur = cur[p]
        cur[leaf] = value
    return b


def logs(*lines: str) -> dict[str, Any]:
    return {"source": "pm2", "matched": [{"time": None, "stream": "out", "text": ln, "code": None} for ln in lines],
            "tail": list(lines[-20:])}


CASES: dict[str, tuple[dict[str, Any], str, int | None]] = {
    "healthy": (healthy_bot(), "healthy", None),
    "fresh open wins over an old 401": (bot(**{"logs": logs(L401, OPEN)}), "healthy", None),
    "health open wins over log lines without an open": (bot(**{"logs": logs(L401)}), "healthy", None),
    "stopped with clean logs": (bot(**{"process.status": "stopped", "health": None}), "process_down", None),
    "systemd inactive with clean logs": (bot(**{"process.manager": "systemd", "process.status": "inactive",
                                                "health.connection": "stopped"}), "process_down", None),
    "service missing": (bot(**{"process.status": "missing", "process.instances": 0}), "process_down", None),
    "stopped after a 401": (bot(**{"process.status": "stopped", "logs": logs(OPEN, L401)}), "logged_out", 401),
    "pm2 errored, unstable restarts": (bot(**{"process.status": "errored", "process.unstable_restarts": 16,
                                              "logs": logs("TypeError: x is not a function")}), "crash", None),
    "errored with ERR_REQUIRE_ESM": (bot(**{"process.status": "errored", "logs": logs(ESM)}),
                                     "library_mismatch", None),
    "errored, installed != expected": (bot(**{"process.status": "errored", "library.installed": "6.7.19"}),
                                       "library_mismatch", None),
    "errored, known bad, 405": (bot(**{"process.status": "errored", "library.installed": "6.7.20",
                                       "library.known_bad": True, "logs": logs(OPEN, L405)}),
                                "client_outdated", 405),
    "running and open on a known-bad version": (bot(**{"library.installed": "6.7.20", "library.known_bad": True}),
                                               "library_mismatch", None),
    "running on another version, not known bad": (bot(**{"library.installed": "6.7.17"}), "healthy", None),
    "405 while running": (bot(**{"health.connection": "close",
                                 "health.last_disconnect": {"code": 405, "reason": "x", "at": None},
                                 "logs": logs(OPEN, L405)}), "client_outdated", 405),
    "waiting for a link after 401": (bot(**{"health.connection": "waiting_link",
                                            "health.last_disconnect": {"code": 401, "reason": "device_removed",
                                                                       "at": "2026-11-22T06:59:00Z"},
                                            "auth.creds.present": False, "auth.creds.parses": False}),
                                     "logged_out", 401),
    "creds unparseable, no 401": (bot(**{"health.connection": "waiting_link", "auth.creds.parses": False,
                                         "auth.creds.linked": False}), "creds_lost", None),
    "creds missing, no 401": (bot(**{"auth.creds.present": False, "auth.creds.parses": False,
                                     "health.connection": "connecting"}), "creds_lost", None),
    "two instances": (bot(**{"process.instances": 2}), "conflict", None),
    "conflict in health (replaced)": (bot(**{"health.connection": "close",
                                             "health.last_disconnect": {"code": None, "reason": "replaced"},
                                             "logs": logs(OPEN)}), "conflict", 440),
    "network: close 408 in health only": (bot(**{"health.connection": "connecting",
                                                 "health.last_disconnect": {"code": 408, "reason": "lost"},
                                                 "logs": logs(OPEN)}), "network", 408),
    "banned 403": (bot(**{"health.connection": "close", "health.last_disconnect": {"code": 403},
                          "logs": logs(OPEN, '<failure reason="403" location="frc"/>')}), "banned", 403),
    "folder bloat (emergency)": (bot(**{"auth.file_count": 7402}), "file_bloat", None),
    "v7 pre-keys are not bloat": (bot(**{"auth.file_count": 850, "library.installed": "7.0.0-rc.9",
                                         "library.expected": "7.0.0-rc.9"}), "healthy", None),
    "stale health, nothing in logs": (bot(**{"health.age_s": 7200, "logs": logs()}), "restart_required", None),
    "Bad MAC flood with no session while open": (
        bot(**{"logs": logs(OPEN, *[BAD_MAC] * 12, "No session record")}), "corrupt_keys", 500),
    "Bad MAC noise while open": (bot(**{"logs": logs(OPEN, *[BAD_MAC] * 3)}), "healthy", None),
    "postgres unreachable is not creds_lost": (
        bot(**{"auth": {"store": "postgres", "db": {"reachable": False, "error": "timeout", "rows": None}}}),
        "healthy", None),
    "postgres creds row missing": (
        bot(**{"health.connection": "waiting_link",
               "auth": {"store": "postgres", "db": {"reachable": True, "rows": 0, "by_type": {},
                                                     "creds": {"present": False, "parses": False}}}}),
        "creds_lost", None),
    "postgres rows over threshold": (
        bot(**{"auth": {"store": "postgres", "db": {"reachable": True, "rows": 5000, "by_type": {},
                                                     "creds": {"present": True, "parses": True}}}}),
        "file_bloat", None),
    # -- a rate limit comes while the connection stays open (the bot's sends are refused)
    "429 while the connection stays open": (bot(**{"logs": logs(OPEN, RATE)}), "rate_limited", 429),
    "a 429 long ago with the connection open since": (bot(**{"logs": logs(OPEN, OLD_RATE)}), "healthy", None),
    # -- a stopped process: only a cause a bot stops on by itself explains it
    "stopped with an old 429": (bot(**{"process.status": "stopped", "health.connection": "stopped",
                                       "logs": logs(OPEN, RATE)}), "process_down", None),
    "pm2 stopped, health stopped after 401, log rotated": (
        bot(**{"process.status": "stopped", "health.connection": "stopped",
               "health.last_disconnect": {"code": 401, "reason": "device_removed", "at": None}, "logs": logs()}),
        "logged_out", 401),
    "running, the bot gave up after 401": (
        bot(**{"health.connection": "stopped",
               "health.last_disconnect": {"code": 401, "reason": "device_removed", "at": None}, "logs": logs(OPEN)}),
        "logged_out", 401),
    "running, health stopped without a code": (bot(**{"health.connection": "stopped", "logs": logs(OPEN)}),
                                               "restart_required", None),
    # -- crash loops: the health file is the dead process's last word
    "systemd auto-restart after a thrown error": (
        bot(**{"process": SYSTEMD_LOOP, "health.connection": "stopped", "logs": logs(OPEN, *CRASH, *CRASH)}),
        "crash", None),
    "systemd auto-restart, library not exported": (
        bot(**{"process": SYSTEMD_LOOP, "health.connection": "stopped", "library.installed": "7.0.0-rc.9",
               "logs": logs(OPEN, NOT_EXPORTED, *CRASH[2:])}), "library_mismatch", None),
    "pm2 waiting restart after a failed exit": (
        bot(**{"process.status": "waiting restart", "process.exit_code": 1, "process.unstable_restarts": 0,
               "health.connection": "stopped", "logs": logs(OPEN, *CRASH[:3])}), "crash", None),
    # -- creds: fresh unlinked creds are lost creds when a linked backup exists and nothing revoked them
    "postgres: fresh unlinked creds row, linked backup, no 401": (
        bot(**{"health.connection": "waiting_link", "auth": PG_FRESH_CREDS, "backups": LINKED_BACKUP}),
        "creds_lost", None),
    "fresh unlinked creds, never linked (new bot)": (
        bot(**{"health.connection": "waiting_link", "auth": PG_FRESH_CREDS, "backups": {"count": 0, "latest": None}}),
        "logged_out", None),
    "fresh unlinked creds after a reset, its 401 out of the log window": (
        bot(**{"health.connection": "waiting_link", "auth": PG_FRESH_CREDS,
               "backups": {"count": 1, "latest": {**LINKED_BACKUP["latest"], "reason": "pre-reset"},
                           "latest_restorable": {**LINKED_BACKUP["latest"], "reason": "pre-reset"}}}),
        "logged_out", None),
    "fresh unlinked creds after a 401": (
        bot(**{"health.connection": "waiting_link", "auth": PG_FRESH_CREDS, "backups": LINKED_BACKUP,
               "logs": logs(OPEN, L401)}), "logged_out", 401),
    "a 401 before the newest open does not hide lost creds": (
        bot(**{"auth.creds.present": False, "auth.creds.parses": False, "health.connection": "waiting_link",
               "logs": logs(L401, OPEN)}), "creds_lost", None),
    "no health, log says open": (bot(**{"health": None}), "healthy", None),
    "no health, nothing known": (bot(**{"health": None, "logs": logs()}), "unknown", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_facts_case(name: str) -> None:
    facts, cause, code = CASES[name]
    d = diagnose(json.loads(json.dumps(facts)))  # exactly what comes off the wire
    assert (d.cause, d.code) == (cause, code), d.evidence
    assert d.evidence and 0 < d.confidence <= 1


def test_thresholds_are_settings() -> None:
    b = bot(**{"auth.file_count": 250})
    assert diagnose(b).cause == "healthy"
    assert any("warning" in e for e in diagnose(b).evidence)
    assert diagnose(b, Settings(files_emergency=240)).cause == "file_bloat"


def test_document_and_garbage_facts() -> None:
    doc = {"schema": 1, "bots": [healthy_bot(), {"bot": "odd", "process": "nonsense", "logs": {"matched": [1, None]}},
                                  "junk"]}
    out = diagnose_document(doc)
    assert out["shop"].cause == "healthy"
    assert out["odd"].cause == "unknown"


def test_matched_and_tail_merge_keeps_order() -> None:
    recs = records_from_logs({"matched": [{"text": L401, "code": 401}, {"text": OPEN}], "tail": ["x", OPEN, "y"]})
    assert [r.text.split()[0] for r in recs] == ["connection", "x", "opened", "y"]


def test_a_backup_dated_in_the_future_is_flagged_not_a_negative_age() -> None:
    b = healthy_bot()
    b["backups"] = {"count": 1, "latest": {"id": "b9", "verified": True, "creds_linked": True, "age_s": -86400}}
    ev = " ".join(diagnose(b).evidence)
    assert "IN THE FUTURE" in ev and "age=-" not in ev
