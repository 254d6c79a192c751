"""verify.wait_verified with a scripted bot and a fake clock; qrshow output; the CLI's usage errors."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from waops.diagnose import Diagnosis
from waops.errors import UnreachableError
from waops.model import Health, LinkRequest
from waops.qrshow import ascii_qr, pairing_text, save_qr
from waops.verify import BotState, wait_verified


def state(cause: str, conn: str, **health: object) -> BotState:
    return BotState(Diagnosis(cause, None, [], 0.9), {"bot": "shop", "health": {"connection": conn, **health}})


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.5)


def verify(states: list[BotState | Exception], timeout: float = 30, **kw: object):
    ft = FakeTime()
    seq = list(states)

    def probe() -> BotState:
        item = seq.pop(0) if len(seq) > 1 else seq[0]
        if isinstance(item, Exception):
            raise item
        return item

    return verify_result(probe, ft, timeout, **kw)


def verify_result(probe, ft: FakeTime, timeout: float, **kw: object):
    return wait_verified(probe, timeout_s=timeout, clock=ft.clock, sleep=ft.sleep, interval_s=1, settle_s=2,
                         **kw)  # type: ignore[arg-type]


def test_open_twice_in_a_row_is_verified() -> None:
    r = verify([state("unknown", "connecting"), state("healthy", "open"), state("healthy", "open")])
    assert r.ok and "open" in r.detail


def test_a_flapping_bot_is_not_verified() -> None:
    flap = [state("healthy", "open"), state("conflict", "close")] * 40
    r = verify(flap, timeout=20)
    assert not r.ok and "not verified within 20s" in r.detail


def test_unreachable_while_waiting_is_retried() -> None:
    r = verify([UnreachableError("down"), state("healthy", "open")])
    assert r.ok


def test_the_round_trip_is_the_last_word() -> None:
    calls: list[float] = []

    def rt(timeout: float) -> tuple[bool, str]:
        calls.append(timeout)
        return False, "test message: timed out"

    r = verify([state("healthy", "open")], timeout=15, round_trip=rt)
    assert not r.ok and calls and "timed out" in r.detail


def test_each_new_qr_is_shown_and_the_wait_for_a_person_is_measured() -> None:
    shown: list[LinkRequest] = []
    seq = [state("logged_out", "waiting_link", qr="2@a"), state("logged_out", "waiting_link", qr="2@a"),
           state("logged_out", "waiting_link", qr="2@b"), state("healthy", "open")]
    r = verify(seq, wait_for_link=True, on_link=shown.append)
    assert r.ok and r.link_shown
    assert [s.qr for s in shown] == ["2@a", "2@b"]
    assert r.human_wait_s > 0


def test_cancel_stops_the_wait() -> None:
    r = verify([state("unknown", "connecting")], cancelled=lambda: True)
    assert not r.ok and r.detail == "cancelled"


def test_qr_in_the_terminal_and_as_a_private_image(tmp_path: Path) -> None:
    art = ascii_qr("2@abcdef,ghijkl,mnopqr")
    assert len(art.splitlines()) > 10 and "█" in art
    path = save_qr("2@abcdef", tmp_path / "qr", "bot-1-shop")
    assert path.suffix in (".png", ".svg") and path.stat().st_size > 100
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pairing_text("abcd1234") == "ABCD-1234"


def test_link_request_json_leaves_the_qr_string_out() -> None:
    health = Health.from_dict({"qr": "2@secretish", "connection": "waiting_link"})
    link = LinkRequest.from_health(health, bot="shop", host="h")
    assert link.pending and "2@secretish" not in str(link.to_dict())


def test_recover_needs_hosts_or_all() -> None:
    from waops.cli import cli

    result = CliRunner().invoke(cli, ["recover"], standalone_mode=False)
    assert result.exception is not None and "--all" in str(result.exception)


def test_recover_refuses_a_bad_pairing_number() -> None:
    from waops.cli import cli

    result = CliRunner().invoke(cli, ["recover", "h", "--pair-phone", "not-a-number"], standalone_mode=False)
    assert result.exception is not None and "E.164" in str(result.exception)


def test_a_cause_waiting_cannot_change_fails_at_once() -> None:
    r = verify([state("file_bloat", "open")], timeout=150)
    assert not r.ok and "waiting will not" in r.detail and r.elapsed_s < 10


def test_a_settled_cause_while_not_connected_is_waited_for() -> None:
    r = verify([state("file_bloat", "connecting")] * 3 + [state("healthy", "open")], timeout=60)
    assert r.ok
