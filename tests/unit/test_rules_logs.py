"""Every log fixture (tests/fixtures/logs/<cause>--<code|none>--<case>.log) gets its expected cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from waops.diagnose import Diagnosis, diagnose_log
from waops.logparse import read_log
from waops.model import CAUSES
from waops.rules import LOG_RULES, Rule

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
CASES = sorted(LOGS.glob("*.log"))


def expected(path: Path) -> tuple[str, int | None]:
    cause, code, _ = path.name.split("--", 2)
    return cause, None if code == "none" else int(code)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_cause_and_code(path: Path) -> None:
    cause, code = expected(path)
    d = diagnose_log(read_log(path))
    assert (d.cause, d.code) == (cause, code), d.evidence
    assert 0.0 <= d.confidence <= 1.0
    if cause not in ("unknown",):
        assert d.evidence, "a diagnosis names the lines that decided it"


def test_every_cause_with_a_log_signature_has_a_fixture() -> None:
    covered = {expected(p)[0] for p in CASES}
    # causes only facts can show: process state, folder size
    assert set(CAUSES) - covered == {"process_down", "file_bloat"}


def test_conflict_is_decided_by_type_not_message() -> None:
    removed = diagnose_log(read_log(LOGS / "logged_out--401--stream-conflict-device-removed.log"))
    replaced = diagnose_log(read_log(LOGS / "conflict--440--stream-conflict-replaced.log"))
    assert removed.cause == "logged_out" and replaced.cause == "conflict"


def test_newest_state_wins_and_old_failure_is_mentioned() -> None:
    d = diagnose_log(read_log(LOGS / "healthy--none--401-then-fresh-open.log"))
    assert d.cause == "healthy"
    assert any("older failure" in e for e in d.evidence)


def test_qr_refs_ended_is_not_network() -> None:
    d = diagnose_log(read_log(LOGS / "logged_out--408--qr-refs-ended.log"))
    assert d.cause == "logged_out" and d.code == 408
    assert any("QR refs attempts ended" in e for e in d.evidence)


def test_rate_limit_is_not_corrupt_keys() -> None:
    d = diagnose_log(read_log(LOGS / "rate_limited--429--rate-overlimit-500.log"))
    assert d.cause == "rate_limited"


def test_flood_threshold_is_a_setting() -> None:
    from waops.config import Settings

    recs = read_log(LOGS / "corrupt_keys--500--bad-mac-flood-closed.log")
    below, flood = diagnose_log(recs, Settings(bad_mac_flood=100)), diagnose_log(recs, Settings(bad_mac_flood=5))
    assert (flood.cause, flood.rule) == ("corrupt_keys", "bad_mac_flood")
    # below the threshold the errors are still evidence: the same cause, less sure, with the count
    assert (below.cause, below.rule) == ("corrupt_keys", "decrypt_errors")
    assert below.confidence < flood.confidence
    assert any("decryption error(s)" in e for e in below.evidence)


def test_started_at_is_first_evidence_of_the_failure() -> None:
    d = diagnose_log(read_log(LOGS / "logged_out--401--journald-short.log"))
    assert d.started_at is not None


def test_rules_are_data_with_known_causes() -> None:
    assert all(r.cause in (None, *CAUSES) for r in LOG_RULES)
    with pytest.raises(ValueError):
        Rule("x", "y", "failure", "not_a_cause")
    with pytest.raises(ValueError):
        Diagnosis("nope")


def test_every_rule_names_its_origin_and_baileys_rules_their_literal() -> None:
    """The contract tests against Baileys' tarballs read these two attributes from every rule."""
    from tests.contracts.baileys import looks_for

    from waops.rules import ORIGINS

    for r in LOG_RULES:
        assert r.origin in ORIGINS, r.name
        assert (r.literal is not None) == (r.origin == "baileys"), r.name
        if r.literal is not None:  # the rule looks for the very text Baileys writes (or a template's fixed part)
            assert looks_for(r.pattern, r.literal), r.name
    with pytest.raises(ValueError):
        Rule("x", "y", "noise", origin="baileys")
    with pytest.raises(ValueError):
        Rule("x", "y", "noise", origin="node", literal="y")


def test_an_http_clients_status_code_is_not_a_whatsapp_code() -> None:
    from waops.logparse import parse_line

    assert parse_line("AxiosError: Request failed with status code 404").code is None
    assert parse_line("closing: the server sent a status code of 440").code == 440


def test_a_bots_hedged_guess_does_not_decide() -> None:
    d = diagnose_log(read_log(LOGS / "restart_required--515--pairing-then-hedged-guess.log"))
    assert d.rule != "runbook_session" and d.cause == "restart_required"


def test_a_reconnect_after_connection_failure_reads_405_only_without_a_code() -> None:
    """The bot reconnecting says the failure was no 401; a code the record carries still decides."""
    from waops.logparse import Record
    from waops.rules import classify_record

    text = "connection closed: Connection Failure, reconnecting: true"
    bare = [m for m in classify_record(Record(text, text)) if m.kind == "failure"]
    assert [(m.rule, m.cause, m.code) for m in bare] == [("failure_reconnecting", "client_outdated", 405)]
    coded = [m for m in classify_record(Record(text, text, code=503)) if m.kind == "failure"]
    assert [(m.rule, m.cause, m.code) for m in coded] == [("code_503", "network", 503)]


@pytest.mark.parametrize(("line", "code"), [
    ("bot: got error 405 connection closed", 405),
    ("bot: 408 timed out, retrying", 408),
    ("bot: 515 restart required after pairing", 515),
    ("bot: 401 logged out", 401),
    ("bot: v2.3000.1015 connection closed", None),  # a version is no code
])
def test_a_code_before_the_words_for_the_close(line: str, code: int | None) -> None:
    from waops.logparse import parse_lines

    assert [r.code for r in parse_lines([line])] == [code]


def test_a_missing_store_file_is_no_crash_of_the_bot() -> None:
    """Only a file of the bot's own that is not part of the auth store reads as its missing-file crash."""
    from waops.logparse import Record
    from waops.rules import classify_record

    def rules_of(path: str) -> list[str]:
        text = f"Error: ENOENT: no such file or directory, open '{path}'"
        return [m.rule for m in classify_record(Record(text, text))]

    assert "own_file_missing" in rules_of("./public/log/session_1.txt")
    for key in ("./auth/session-00000000000.0.json", "./auth/app-state-sync-key-AAAA.json",
                "/srv/shop/auth_info/creds.json", "./auth/lid-mapping-1.json"):
        assert "own_file_missing" not in rules_of(key), key
