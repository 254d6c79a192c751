"""logparse: every format, garbage, and a bounded read of the end of a file."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from waops.errors import UsageError
from waops.logparse import MAX_LINE, parse_line, parse_text, read_log, read_window


def test_pm2_prefixes_and_time() -> None:
    rec = parse_line("0|shop-bot  | 2025-10-27T09:33:07: Session error:Error: Bad MAC Error: Bad MAC")
    assert rec is not None
    assert rec.text == "Session error:Error: Bad MAC Error: Bad MAC"
    assert rec.time == "2025-10-27T09:33:07"


def test_pino_json_epoch_ms_and_level() -> None:
    line = json.dumps({"level": 50, "time": 1646809863449, "msg": "connection closed",
                       "err": {"output": {"statusCode": 428}}})
    rec = parse_line(line)
    assert rec is not None
    assert (rec.source, rec.level, rec.code) == ("pino", "error", 428)
    assert rec.time == "2022-03-09T07:11:03.449Z"


def test_pino_iso_time_with_pm2_time_prefix() -> None:
    rec = parse_line('2025-10-27T09:33:07: {"level":30,"time":"2025-10-17T21:16:26.710Z","msg":"connected to WA"}')
    assert rec is not None and rec.time == "2025-10-17T21:16:26.710Z" and rec.text == "connected to WA"


def test_stream_conflict_type_decides_code() -> None:
    def node(t: str) -> str:
        return json.dumps({"level": 50, "msg": "stream errored out",
                           "node": {"tag": "stream:error", "content": [{"tag": "conflict", "attrs": {"type": t}}]}})

    removed, replaced = parse_line(node("device_removed")), parse_line(node("replaced"))
    assert removed is not None and replaced is not None
    assert (removed.code, removed.conflict_type) == (401, "device_removed")
    assert (replaced.code, replaced.conflict_type) == (440, "replaced")


def test_pino_pretty_folds_indented_object_lines() -> None:
    recs = parse_text("[17:03:10.043] ERROR (16624): stream errored out\n    err: {\n"
                      '      "output": { "statusCode": 403 }\n    }\n[17:03:11.000] INFO (16624): next\n')
    assert [r.text.split()[0] for r in recs] == ["stream", "next"]
    assert recs[0].code == 403 and recs[0].level == "error" and recs[0].time == "17:03:10.043"


def test_pino_pretty_with_hostname() -> None:
    rec = parse_line("[2025-10-27 09:33:07.000 +0000] WARN (812 on bot-1): connection errored")
    assert rec is not None and rec.source == "pino-pretty" and rec.level == "warn"


def test_journald_json_with_byte_array_message_and_pino_inside() -> None:
    inner = json.dumps({"level": 30, "msg": "opened connection to WA"})
    recs = parse_text("\n".join([
        json.dumps({"__REALTIME_TIMESTAMP": "1761557587000000", "MESSAGE": inner, "_SYSTEMD_UNIT": "x.service"}),
        json.dumps({"__REALTIME_TIMESTAMP": "1761557588000000", "MESSAGE": [66, 97, 100, 32, 77, 65, 67, 255]}),
    ]))
    assert recs[0].text == "opened connection to WA" and recs[0].source == "journald"
    assert recs[0].time == "2025-10-27T09:33:07.000Z"
    assert recs[1].text.startswith("Bad MAC")


def test_journald_short_text() -> None:
    rec = parse_line("Oct 27 09:33:07 bot-1 node[812]: Connection Lost from Server, reconnecting...")
    assert rec is not None and rec.source == "journald" and rec.text.startswith("Connection Lost")


def test_failure_reason_attribute() -> None:
    rec = parse_line('<failure reason="403" location="frc"/>')
    assert rec is not None and rec.code == 403


def test_garbage_is_survived(tmp_path: Path) -> None:
    p = tmp_path / "bin.log"
    p.write_bytes(os.urandom(200_000) + b"\n\x00\x00\xff" * 100)
    recs = read_log(p)
    assert all("\x00" not in r.text for r in recs)
    assert read_log(_write(tmp_path / "empty.log", b"")) == []


def test_ten_megabyte_line_is_truncated(tmp_path: Path) -> None:
    p = _write(tmp_path / "big.log", b"x" * 10_000_000 + b"\nopened connection to WA\n")
    recs = read_log(p, window=20_000_000)
    assert len(recs) == 2 and len(recs[0].raw) <= MAX_LINE
    # from a small window, the partial huge line is cut to its end, the next line stays whole
    recs = read_log(p, window=65_536)
    assert recs[-1].text == "opened connection to WA"
    assert all(len(r.raw) <= MAX_LINE for r in recs)


def test_missing_file_is_a_clear_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        read_log(tmp_path / "nope.log")
    with pytest.raises(UsageError, match="directory"):
        read_log(tmp_path)


def test_window_reads_only_the_end_from_a_line_boundary(tmp_path: Path) -> None:
    lines = [f"line {i:06d}" for i in range(100_000)]
    p = _write(tmp_path / "l.log", ("\n".join(lines) + "\n").encode())
    data = read_window(p, 4096)
    assert len(data) <= 4096
    text = data.decode()
    assert text.startswith("line ") and text.endswith("line 099999\n")


def test_file_truncated_while_read(tmp_path: Path) -> None:
    """pm2-logrotate copies then truncates: reading while that happens must not fail."""
    p = _write(tmp_path / "rot.log", b"Session error:Error: Bad MAC\n" * 200_000)
    stop = threading.Event()

    def rotate() -> None:
        while not stop.is_set():
            with p.open("r+b") as f:
                f.truncate(0)
            p.write_bytes(b"opened connection to WA\n" * 1000)
            time.sleep(0.001)

    t = threading.Thread(target=rotate)
    t.start()
    try:
        for _ in range(50):
            read_log(p)  # never raises, whatever it sees
    finally:
        stop.set()
        t.join()


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def test_records_of_interleaved_processes_are_assembled_apart() -> None:
    """`pm2 logs` of two apps: each app's stack and object dump stay with its own record."""
    recs = parse_text(
        "0|shop  | Error: WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)\n"
        "1|crm   | connection update {\n"
        "0|shop  |     at WebSocketClient.<anonymous> (/srv/shop/node_modules/baileys/lib/Socket/socket.js:617:17)\n"
        "1|crm   |   connection: 'open'\n"
        "1|crm   | }\n"
        "0|shop  | {\"level\":30,\"msg\":\"connected to WA\"}\n")
    assert [r.text.splitlines()[0] for r in recs] == [
        "Error: WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)", "connection update {", "connected to WA"]
    assert "socket.js:617" in recs[0].raw and "'open'" in recs[1].text


def test_prefixes_are_peeled_and_the_record_assembled() -> None:
    """ANSI colours, CRLF, docker -t, pm2 and an epoch-ms column around one multi-line record."""
    text = ("\x1b[32m2026-11-20T10:00:01.123456789Z\x1b[39m 0|shop  | connection closed {\r\n"
            "2026-11-20T10:00:01.123456789Z 0|shop  |   output: { statusCode: 401 }\r\n"
            "2026-11-20T10:00:01.123456789Z 0|shop  | }\r\n"
            "1763632801000,Session error:Error: Bad MAC Error: Bad MAC\n"
            "1763632801000,    at Object.verifyMAC (/srv/bot/node_modules/libsignal/src/crypto.js:87:15)\n")
    first, second = parse_text(text)
    assert first.code == 401 and first.time == "2026-11-20T10:00:01.123Z" and "\r" not in first.text
    assert second.text.startswith("Session error:Error: Bad MAC") and second.time == "2025-11-20T10:00:01.000Z"
    assert "verifyMAC" in second.raw


def test_a_record_cut_mid_object_still_gives_its_code() -> None:
    (rec,) = parse_text("    statusCode: 440,\n    payload: {\n      message: 'Stream Errored (conflict)'\n")
    assert rec.code == 440


def test_terminal_wraps_are_joined_in_a_paste_only() -> None:
    from waops.logparse import parse_lines

    first = "WARN [2025-03-02 10:11:12.345 +0000] (4242): connect attempt 12 failed: Error: U"
    assert len(first) == 80
    lines = [first, "nexpected server response: 404, retrying..."]
    pasted = parse_lines(lines)
    assert len(pasted) == 1 and "Unexpected server response: 404" in pasted[0].text
    assert len(parse_lines(lines, pasted=False)) == 2  # an agent's lines come from a file, never wrapped


@pytest.mark.parametrize(("line", "code"), [
    ("link dropped (status 440), retrying", 440),
    ("socket down, last error status=408 Request Time-out", 408),
    ("GET /api/sessions status=500 1.2ms", None),  # an access log's HTTP status, not WhatsApp's
    ("order #(status 5)", None),
])
def test_a_bots_status_forms_give_the_code(line: str, code: int | None) -> None:
    rec = parse_line(line)
    assert rec is not None and rec.code == code


def test_a_caret_block_under_a_relative_path_takes_its_error() -> None:
    recs = parse_text("src/run.js:3\nconst a = b ?? c\n          ^\n\nSyntaxError: Unexpected token '?'\n")
    assert len(recs) == 1 and recs[0].text.endswith("SyntaxError: Unexpected token '?'")
