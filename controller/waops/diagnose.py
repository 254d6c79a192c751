"""Facts (or a saved log) -> Diagnosis(cause, code, evidence, confidence). Pure functions, no I/O.

The rules themselves are data in waops.rules; this module only weighs them:
- in a log, the newest state wins: failures before the last `opened connection` are history;
- a status code decides by code and conflict type, never by message alone;
- in facts, hard facts (two instances, no service, a crash, unreadable creds) come first, then a fresh
  health file (an `open` written by the bot itself wins over old log lines), then the log window.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from waops.config import Settings
from waops.logparse import Record, parse_line, parse_lines
from waops.model import CAUSES, Auth, Backups, BotFacts, Creds, Facts, Health, Library, Logs, Process, bot_facts
from waops.rules import (
    CODES,
    LOG_RULES,
    PAIRING_GRACE_RECORDS,
    RATE_LIMIT_RECENT_S,
    STOP_CAUSES,
    Match,
    classify_record,
)
from waops_host.base import parse_iso
from waops_host.versions import version_key

FEW_DECRYPT_BASE, FEW_DECRYPT_MAX = 0.35, 0.55  # a few decryption errors alone: below the planner's bar
RESTART_AFTER_PAIRING = (515, 410)  # 410 Gone was the multi-device beta's restart required
# libsignal's errors, Baileys' own line for them, a missing key file: every counted (flood) rule
DECRYPT_RULES = tuple(r.name for r in LOG_RULES if r.kind == "flood")
RECENCY_DECAY = 0.97  # per newer failure line: an old line needs much more weight to win
MAX_EVIDENCE = 6
# A v7 session uploads ~812 pre-keys where 6.x uploads 30: the folder thresholds grow by this much.
VERSION_FILE_ALLOWANCE = {7: 800}
FAILED_STATES = ("errored", "failed")
STOPPED_STATES = ("stopped", "inactive", "stopping")
CRASH_SUBSTATES = ("auto-restart",)  # systemd: the main process failed, the unit waits to start it again
WAITING_STATES = ("waiting restart",)  # pm2: between two starts (restart_delay)
REVOKED_CODES = {401, 402, 403, 406}  # the server ended the device: no local state explains these


@dataclass
class Diagnosis:
    cause: str
    code: int | None = None
    evidence: list[str] = field(default_factory=list)
    confidence: float = 0.0
    started_at: str | None = None  # time of the first evidence of this failure, when known
    rule: str | None = None  # the rule (or fact) that decided

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}")
        self.confidence = round(max(0.0, min(1.0, self.confidence)), 2)

    @property
    def healthy(self) -> bool:
        return self.cause == "healthy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ logs
def diagnose_log(records: Sequence[Record], settings: Settings | None = None) -> Diagnosis:
    """Classify a saved log (or the log window of a facts document)."""
    s = settings or Settings()
    timeline: list[tuple[int, Record, Match]] = [
        (i, rec, m) for i, rec in enumerate(records) for m in classify_record(rec)
    ]
    opens = [t for t in timeline if t[2].kind == "open"]
    last_open = opens[-1][0] if opens else -1
    pairings = [i for i, _, m in timeline if m.kind == "pairing"]

    def expected_515(i: int, m: Match) -> bool:
        # the newest pairing at or before i (bisect: a flood of lines must not make this quadratic)
        k = bisect_right(pairings, i)
        return m.code in RESTART_AFTER_PAIRING and k > 0 and i - pairings[k - 1] <= PAIRING_GRACE_RECORDS

    current = [t for t in timeline if t[0] > last_open]
    # a QR the bot printed before the newest pairing was scanned: the pairing supersedes it
    failures = [t for t in current if t[2].kind == "failure" and not expected_515(t[0], t[2])
                and not (t[2].rule == "qr_waiting" and pairings and t[0] < pairings[-1])]
    # a QR printed after a timeout or a close: the socket reached the server again and now waits for a
    # scan, so the network fault before it is over (the device needs a link)
    qrs = [t[0] for t in failures if t[2].rule == "qr_waiting"]
    if qrs:
        failures = [t for t in failures if not (t[0] < qrs[-1] and t[2].cause in ("network", "restart_required"))]
    history = [t for t in timeline if t[0] < last_open and t[2].kind == "failure"]
    bad_mac = [t for t in current if t[2].rule in DECRYPT_RULES]
    support = [t for t in current if t[2].kind == "support"]
    in_bad_mac = {id(t) for t in bad_mac}  # a set: `t not in bad_mac` was quadratic on a Bad MAC flood
    noise = [t for t in timeline if t[2].kind == "noise" or (t[2].kind == "flood" and id(t) not in in_bad_mac)]
    expected = [t for t in timeline if t[2].kind == "failure" and expected_515(t[0], t[2])]

    notes: list[str] = []
    flood = len(bad_mac) >= s.bad_mac_flood
    # A Bad MAC burst means broken keys when no working session backs it: libsignal says so
    # ("No session record"), or the connection is not open, or it ends in another failure.
    if flood and (support or last_open < 0 or failures):
        i, rec, _ = bad_mac[-1]
        w = 0.8 + (0.1 if support else 0.0)
        failures.append((i, rec, Match("failure", "corrupt_keys", 500, w, "bad_mac_flood")))
        failures.sort(key=lambda t: t[0])
        notes.append(f"{len(bad_mac)} Bad MAC lines in this session"
                     + (f", {len(support)} 'no session' errors" if support else ""))
    elif bad_mac and last_open < 0:
        # Evidence is never `unknown`: a few decryption errors and nothing else say the keys of some
        # chats are broken. Low confidence, with the count: acting is the planner's call (a flood).
        i, rec, _ = bad_mac[-1]
        w = min(FEW_DECRYPT_MAX, FEW_DECRYPT_BASE + 0.02 * len(bad_mac) + (0.05 if support else 0.0))
        failures.append((i, rec, Match("failure", "corrupt_keys", None, w, "decrypt_errors")))
        failures.sort(key=lambda t: t[0])
        notes.append(f"{len(bad_mac)} decryption error(s), fewer than a flood ({s.bad_mac_flood}): "
                     "some chats' keys are broken; no connection state in the window")
    elif bad_mac:
        notes.append(f"{len(bad_mac)} Bad MAC line(s) with a working session: noise")
    if not failures and last_open < 0 and expected:
        # pairing, then the expected 515, and no reconnect after it: a restart is what is missing
        i, rec, m = expected[-1]
        failures.append((i, rec, Match("failure", "restart_required", m.code, 0.45, "515_without_reconnect")))
        notes.append("515 after pairing with no reconnect after it: the bot did not restart the socket")

    if failures:
        n = len(failures)
        scored = [(m.weight * RECENCY_DECAY ** (n - 1 - k), k) for k, (_, _, m) in enumerate(failures)]
        _, best_k = max(scored)
        i, rec, m = failures[best_k]
        if m.code is None:
            m = _twin_code(i, m, failures + expected)
        same = [t for t in failures if t[2].cause == m.cause]
        conf = m.weight + min(0.09, 0.03 * (len(same) - 1))
        lines = [rec] + [t[1] for t in reversed(same) if t[1] is not rec]
        ev = _unique(r.evidence() for r in lines)[: MAX_EVIDENCE - len(notes)]
        if m.rule == "bad_mac_flood":
            ev += _unique(t[1].evidence() for t in support)[:1]
        note = CODES[m.code].note if m.code in CODES and m.rule.startswith("code_") else None
        ev += notes + ([f"code {m.code}: {note}"] if note else [])
        if history:
            ev.append(f"{len(history)} older failure line(s) before the last open were ignored")
        return Diagnosis(m.cause or "unknown", m.code, ev, conf, same[0][1].time, m.rule)
    if last_open >= 0:
        ev = [opens[-1][1].evidence(), *notes]
        if history:
            ev.append(f"{len(history)} older failure line(s) before it (newest state wins), e.g. "
                      f"{history[-1][1].evidence(120)}")
        if expected:
            ev.append("515 right after pairing: expected")
        return Diagnosis("healthy", None, ev, 0.8, None, "opened")
    alive = [t for t in timeline if t[2].kind == "alive"]
    if alive:
        # libsignal rotates sessions only while messages flow: a live session, said by no state line
        ev = [alive[-1][1].evidence(), f"{len(alive)} session rotation line(s) (libsignal) and no failure", *notes]
        return Diagnosis("healthy", None, ev, 0.5, None, alive[-1][2].rule)
    ev = ["no line in the window names a connection state or a failure", *notes]
    if expected:
        ev.append("515 right after pairing: expected, waiting for the reconnect")
    if noise:
        ev.append(f"{len(noise)} known-noise line(s), e.g. {noise[-1][1].evidence(120)}")
    return Diagnosis("unknown", None, ev, 0.3 if (noise or expected) else 0.2, None, None)


TWIN_DISTANCE = 3  # records: Baileys' pino line and the bot's console dump of the same close sit this close


def _twin_code(i: int, m: Match, near: Sequence[tuple[int, Record, Match]]) -> Match:
    """A line that names the cause without its code (`Error: Restart Required` in a console dump) takes
    the code of a line next to it that names the same cause with one: the same event, logged twice."""
    twins = [(abs(j - i), t.code) for j, _, t in near
             if t.cause == m.cause and t.code is not None and abs(j - i) <= TWIN_DISTANCE]
    return replace(m, code=min(twins)[1]) if twins else m


def records_from_logs(logs: Logs | Mapping[str, Any] | None) -> list[Record]:
    """Records from a facts `logs` block. The agent ships each stream's newest raw lines (`streams`);
    each stream is assembled into records by the one reader (waops.logparse), then the streams are
    merged by time (a record without a time follows its predecessor; a stream with no time at all is
    dated by its file's mtime, `mtimes`, when the agent sent one). An older agent's block
    (`matched` lines, then the `tail`) is read too."""
    if logs is None:
        return []
    block = logs if isinstance(logs, Logs) else Logs.from_dict(dict(logs))
    if block.streams is not None:
        return _merge_streams(block.streams, block.mtimes or {})
    matched = [m for m in block.matched or [] if isinstance(m, Mapping)]
    tail = [t for t in block.tail or [] if isinstance(t, str)]
    tail_set = {t.strip() for t in tail}
    cut = next((k for k, m in enumerate(matched) if str(m.get("text", "")).strip() in tail_set), len(matched))
    out: list[Record] = []
    for m in matched[:cut]:
        rec = parse_line(str(m.get("text", "")))
        if rec is None:
            continue
        code = m.get("code")
        if rec.code is None and isinstance(code, int):
            rec.code = code
        rec.time = rec.time or m.get("time")
        rec.stream = m.get("stream")
        out.append(rec)
    out.extend(r for r in (parse_line(t) for t in tail) if r is not None)
    return out


def _merge_streams(streams: Mapping[str, Any], mtimes: Mapping[str, Any]) -> list[Record]:
    """A record without a time takes its predecessor's (the first one's, at the start of a stream). A
    stream without any time (pm2's default stderr log: plain lines beside pino JSON) is dated by its
    file's mtime, the time of its newest line: its lines sort before what the other streams wrote
    later (a Bad MAC burst before the restart that fixed it) and after what they wrote earlier. With no
    mtime it goes last: what the process printed as it died, more often than not."""
    keyed: list[tuple[float, int, int, Record]] = []
    for order, (name, lines) in enumerate(sorted(streams.items())):
        if not isinstance(lines, list):
            continue
        recs = parse_lines((str(x) for x in lines if isinstance(x, str)), pasted=False)
        times = [_epoch(r.time) for r in recs]
        known = [t for t in times if t is not None]
        written = _epoch(mtimes.get(name))
        last = known[0] if known else written if written is not None else float("inf")
        for k, (rec, t) in enumerate(zip(recs, times, strict=True)):
            rec.stream = str(name)
            last = t if t is not None else last
            keyed.append((last, order, k, rec))
    keyed.sort(key=lambda x: x[:3])
    return [r for *_, r in keyed]


# ------------------------------------------------------------------------------------------ facts
def diagnose(bot: BotFacts | Mapping[str, Any], settings: Settings | None = None) -> Diagnosis:
    """One bot's facts (an element of the facts document's `bots`, typed by `parse_facts` where the
    document arrived; a plain JSON entry is read tolerantly) -> Diagnosis."""
    s = settings or Settings()
    facts = bot_facts(bot)
    d = _decide(facts, s)
    _annotate(d, facts, s)
    return d


def diagnose_document(doc: Facts | Mapping[str, Any], settings: Settings | None = None) -> dict[str, Diagnosis]:
    """Every bot of a facts document, by bot name."""
    facts = doc if isinstance(doc, Facts) else Facts.from_dict(dict(doc))
    return {b.bot or f"bot{k}": diagnose(b, settings) for k, b in enumerate(facts.bots)}


def _decide(bot: BotFacts, s: Settings) -> Diagnosis:
    proc = bot.process or Process()
    health = bot.health
    lib = bot.library or Library()
    records = records_from_logs(bot.logs)
    logd = diagnose_log(records, s)
    status = proc.status or ""
    pev = _process_evidence(bot.process)
    hcode = _health_code(health)
    # Codes of this session only: a 401 before the newest `open` was fixed by a new link.
    codes = {r.code for r in _since_last_open(records) if r.code} | ({hcode} if hcode else set())
    seen_401 = 401 in codes
    log_specific = logd.cause not in ("healthy", "unknown")

    if proc.instances is not None and proc.instances > 1:
        return Diagnosis("conflict", 440 if 440 in codes else None,
                         [f"{proc.instances} instances run on one set of credentials", pev, *logd.evidence[:2]],
                         0.9, logd.started_at, "instances")
    if status == "missing":
        return Diagnosis("process_down", None, [pev, "the service is not registered (pm2 app or unit "
                                                     "missing)"], 0.75, None, "process_missing")

    unstable = proc.unstable_restarts or 0
    # A crash loop: failed for good, or between two starts after a failed exit (systemd's auto-restart,
    # pm2's waiting restart); the health file then is the dead process's last word, not the truth.
    crashed = (status in FAILED_STATES or (proc.sub_state or "") in CRASH_SUBSTATES
               or (unstable > 0 and status not in ("online", "active"))
               or (status in WAITING_STATES and proc.exit_code not in (None, 0)))
    installed, expected = lib.installed, lib.expected
    lib_bad = bool(lib.known_bad) or bool(installed and expected and installed != expected)
    lib_ev = (f"library {lib.package or 'baileys'} {installed} (expected {expected}"
              f"{', known bad' if lib.known_bad else ''})")
    if crashed:
        if logd.cause in ("library_mismatch", "client_outdated"):
            return _with(logd, [pev, lib_ev], 0.05)
        if lib_bad:
            cause = "client_outdated" if 405 in codes else "library_mismatch"
            return Diagnosis(cause, 405 if cause == "client_outdated" else None,
                             [pev, lib_ev, *logd.evidence[:3]], 0.8, logd.started_at, "library_version")
        if log_specific and logd.cause != "crash":
            return _with(logd, [pev], 0.0)
        return Diagnosis("crash", logd.code, [pev, *logd.evidence[:4]], 0.8 if crashed else 0.6,
                         logd.started_at, "process_crash")

    creds = _creds(bot.auth)
    if creds is not None and (creds.present is False or creds.parses is False) and not seen_401:
        what = "missing" if creds.present is False else "unparseable"
        where = "the creds row" if bot.auth is not None and bot.auth.in_database else "creds.json"
        ev = [f"{where} {what} and no 401 seen", pev, *(logd.evidence[:2] if logd.cause != "healthy" else [])]
        return Diagnosis("creds_lost", None, ev, 0.85, logd.started_at, "creds")

    lost = _creds_replaced(creds, health, codes, bot.backups)
    if lost:
        return Diagnosis("creds_lost", None, [lost, pev, *logd.evidence[:2]], 0.8, logd.started_at,
                         "creds_replaced")

    if status in STOPPED_STATES:
        # Only a cause a bot stops on by itself explains a stopped process; anything older (a 429, a
        # network blip) does not, and a restart is the fix.
        if logd.cause in STOP_CAUSES:
            return _with(logd, [pev], -0.05)
        hcause = CODES[hcode].cause if hcode in CODES else None
        if hcause in STOP_CAUSES:
            return Diagnosis(hcause, hcode, [pev, f"health: the bot stopped after {hcode}: {CODES[hcode].note}",
                                             *logd.evidence[:2]], 0.8, _at(health),
                             f"stopped_after_{hcode}")
        ev = [pev, *logd.evidence[:2]]
        ev.append(f"older log lines said {logd.cause}: that does not stop a bot" if log_specific
                  else "logs show no failure")
        return Diagnosis("process_down", None, ev, 0.85 if not log_specific else 0.75, None, "process_stopped")

    if health is not None:
        return _from_health(health, logd, s, pev, records)
    if log_specific or logd.cause == "healthy":
        return _with(logd, [pev, "no health file"], -0.1)
    return Diagnosis("unknown", None, [pev, "no health file", *logd.evidence[:3]], 0.25, None, None)


def _from_health(health: Health, logd: Diagnosis, s: Settings, pev: str,
                 records: Sequence[Record] = ()) -> Diagnosis:
    conn = health.connection or ""
    age = health.age_s
    fresh = age is not None and age <= s.health_fresh_s
    hcode = _health_code(health)
    reason = health.last_disconnect.reason if health.last_disconnect else None
    hev = f"health: connection={conn} age={age}s" + (
        f" last_disconnect={hcode} {reason or ''}".rstrip() if hcode else "")
    if conn == "open" and fresh:
        # The bot's own fresh `open` wins over old log lines; a Bad MAC flood in this very session
        # (with libsignal's no-session errors) still means broken keys.
        if logd.rule == "bad_mac_flood" and any("no session" in e for e in logd.evidence):
            return _with(logd, [hev], 0.0)
        # A rate limit comes while the socket stays open: recent limit lines in this session decide.
        if logd.cause == "rate_limited" and _recent(_last_time(records, "rate_limited"), health):
            return _with(logd, [hev, "the connection is open, but WhatsApp refuses what the bot sends"], 0.0)
        ev = [hev, pev]
        if logd.cause not in ("healthy", "unknown"):
            ev.append(f"older log lines said {logd.cause}: superseded by the fresh open")
        return Diagnosis("healthy", None, ev, 0.9, None, "health_open")
    if not fresh:
        if logd.cause not in ("unknown",):
            return _with(logd, [hev + " (stale)", pev], -0.1)
        return Diagnosis("restart_required", None, [hev + " (stale: the bot stopped updating it)", pev],
                         0.5, health.updated_at, "health_stale")
    if conn == "waiting_link":
        code = hcode or (logd.code if logd.cause == "logged_out" else None)
        ev = [hev, "the bot waits for a QR scan or a pairing code", *logd.evidence[:2]]
        return Diagnosis("logged_out", code, ev, 0.85, _at(health) or logd.started_at, "health_waiting_link")
    if conn == "stopped":
        # The bot gave up by itself: the reason it stopped on decides (401: relink), else a restart.
        if logd.cause in STOP_CAUSES:
            return _with(logd, [hev], 0.05 if hcode and hcode == logd.code else 0.0)
        if hcode in CODES and CODES[hcode].cause in STOP_CAUSES:
            cr = CODES[hcode]
            return Diagnosis(cr.cause, hcode, [hev, f"code {hcode}: {cr.note}", pev, *logd.evidence[:2]],
                             cr.weight - 0.05, _at(health), f"health_stopped_{hcode}")
        return Diagnosis("restart_required", hcode, [hev, pev, *logd.evidence[:2]], 0.6, _at(health),
                         "health_stopped")
    # close / connecting: the log window has the detail; the health code backs it or stands alone.
    if logd.cause not in ("healthy", "unknown"):
        return _with(logd, [hev], 0.05 if hcode and hcode == logd.code else 0.0)
    if hcode in CODES:
        cr = CODES[hcode]
        return Diagnosis(cr.cause, hcode, [hev, f"code {hcode}: {cr.note}", pev], cr.weight - 0.05, _at(health),
                         f"health_code_{hcode}")
    return Diagnosis("unknown", hcode, [hev, pev, *logd.evidence[:2]], 0.3, _at(health), None)


def _annotate(d: Diagnosis, bot: BotFacts, s: Settings) -> None:
    """Facts that matter beside the cause: folder size (can become the cause), library, backups."""
    auth = bot.auth or Auth()
    lib = bot.library or Library()
    rows = auth.in_database  # keys are rows in both database stores
    count = (auth.db.rows if auth.db else None) if rows else auth.file_count
    warn, emerg = ((s.db_rows_warning, s.db_rows_emergency) if rows
                   else (s.files_warning, s.files_emergency))
    extra = VERSION_FILE_ALLOWANCE.get(_major(lib.installed), 0)
    warn, emerg = warn + extra, emerg + extra
    unit = "rows" if rows else "files"
    if count is not None and count >= emerg:
        msg = f"auth store holds {count} {unit} (emergency at {emerg})"
        if d.cause in ("healthy", "unknown"):
            d.evidence.insert(0, msg)
            d.cause, d.code, d.confidence, d.rule = "file_bloat", None, 0.8, "file_count"
        else:
            d.evidence.append(msg)
    elif count is not None and count >= warn:
        d.evidence.append(f"warning: auth store holds {count} {unit} (warning at {warn})")
    if d.cause == "healthy" and lib.known_bad:
        # Known to break (405 on WhatsApp's next version change, hourly badSession, 440 at login): a
        # finding with the library_mismatch fix now, not a warning that waits for the outage.
        d.evidence.insert(0, f"library {lib.package or 'baileys'} {lib.installed} is known bad "
                             f"(expected {lib.expected}, release {lib.release})")
        d.cause, d.code, d.confidence, d.rule = "library_mismatch", None, 0.75, "known_bad_version"
    elif d.cause == "healthy" and lib.installed and lib.expected and lib.installed != lib.expected:
        d.evidence.append(f"warning: library {lib.installed} (expected {lib.expected}"
                          f"{', known bad' if lib.known_bad else ''})")
    backups = bot.backups
    latest = backups.latest if backups else None
    if backups is not None and latest is None:
        d.evidence.append("no backup yet")
    elif latest is not None:
        age = latest.age_s
        # a negative age is a backup dated in the future (a clock that was wrong, or a planted file)
        when = f"DATED {-age}s IN THE FUTURE (clock skew or a planted backup)" if age is not None and age < 0 \
            else f"age={age}s"
        d.evidence.append(f"latest backup {latest.id} {when} "
                          f"verified={latest.verified} creds_linked={latest.creds_linked}")


# ------------------------------------------------------------------------------------------ helpers
def _with(d: Diagnosis, extra: list[str], delta: float) -> Diagnosis:
    return Diagnosis(d.cause, d.code, [*d.evidence, *(e for e in extra if e)], d.confidence + delta,
                     d.started_at, d.rule)


def _creds(auth: Auth | None) -> Creds | None:
    if auth is None or not auth.to_dict():
        return None
    if auth.in_database:
        db = auth.db
        if db is None or not db.to_dict() or db.reachable is False:
            return None  # an unreachable DB is not lost creds
        return db.creds if db.creds is not None and db.creds.to_dict() else None
    return auth.creds if auth.creds is not None and auth.creds.to_dict() else None


def _creds_replaced(creds: Creds | None, health: Health | None, codes: set[int],
                    backups: Backups | None) -> str | None:
    """Why the creds look lost though they parse: the bot wrote fresh, unlinked creds (Baileys does when it
    finds none) while a verified backup holds linked ones, and nothing says the server ended the device.
    A 401 (or a ban) means the link itself is gone: that is logged_out, whatever the backup holds."""
    if creds is None or creds.present is False or creds.parses is False or creds.linked is not False:
        return None
    if codes & REVOKED_CODES or (health is not None and health.connection == "open"):
        return None
    good = backups.latest_restorable if backups else None
    if good is None:
        latest = backups.latest if backups else None
        good = latest if latest is not None and latest.verified and latest.creds_linked else None
    if good is None:
        return None  # never linked here (a new bot): a link is the only way
    if good.reason == "pre-reset":
        return None  # reset on purpose (after a 401 that may have left the log window): its link is revoked
    return (f"creds are fresh and not linked (the bot made new ones), no 401 seen, while backup "
            f"{good.id} holds linked creds: the local session was lost, not revoked")


def _since_last_open(records: Sequence[Record]) -> Sequence[Record]:
    for k in range(len(records) - 1, -1, -1):
        if any(m.kind == "open" for m in classify_record(records[k])):
            return records[k + 1:]
    return records


def _last_time(records: Sequence[Record], cause: str) -> Any:
    """The time of the newest record that names `cause` as a failure."""
    for rec in reversed(records):
        if any(m.kind == "failure" and m.cause == cause for m in classify_record(rec)):
            return rec.time
    return None


def _recent(t: Any, health: Health) -> bool:
    """Whether a line at time `t` is recent, measured against when the facts were read (health's own
    updated_at plus its age, both wall time). Unknown times count as recent."""
    when, updated = _epoch(t), _epoch(health.updated_at)
    if when is None or updated is None or health.age_s is None:
        return True
    return updated + health.age_s - when <= RATE_LIMIT_RECENT_S


def _epoch(t: Any) -> float | None:
    """Seconds since the epoch of a log or health time: epoch seconds or ms, or ISO 8601 (naive = UTC)."""
    if isinstance(t, bool):
        return None
    if isinstance(t, (int, float)):
        return t / 1000 if t > 1e11 else float(t)
    d = parse_iso(t, naive="utc")
    return d.timestamp() if d else None


def _health_code(health: Health | None) -> int | None:
    last = health.last_disconnect if health is not None else None
    if last is None:
        return None
    if last.code is None and last.reason in ("device_removed", "replaced"):
        return 401 if last.reason == "device_removed" else 440
    return last.code


def _process_evidence(proc: Process | None) -> str:
    if proc is None or not proc.to_dict():
        return "process: unknown"
    values = {"restarts": proc.restarts, "unstable_restarts": proc.unstable_restarts, "instances": proc.instances,
              "uptime_s": proc.uptime_s, "exit_code": proc.exit_code}
    parts = [f"{k}={v}" for k, v in values.items() if v is not None]
    return f"process: {proc.manager or '?'} {proc.status or '?'} " + " ".join(parts)


def _at(health: Health | None) -> str | None:
    """When the last disconnect happened, as the health file says."""
    last = health.last_disconnect if health is not None else None
    return last.at if last is not None else None


def _major(version: str | None) -> int | None:
    try:
        return version_key(version)[0] if version else None
    except ValueError:
        return None


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
