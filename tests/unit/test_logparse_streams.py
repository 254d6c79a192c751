"""Merging pm2's two default logs: the out log is pino JSON with a time on every line, the error log is
libsignal's console.error lines with no time at all. The agent reads both files as they are on disk and
dates the timeless one by its mtime; the controller's one reader merges them on that."""

from __future__ import annotations

import json
import os
from pathlib import Path

from waops.diagnose import diagnose_log, records_from_logs
from waops_host import logtail

T0 = 1_796_000_000.0  # seconds; the bot's lines are a few minutes apart


def _pino(t: float, level: int, msg: str, **kw: object) -> str:
    return json.dumps({"level": level, "time": int(t * 1000), "pid": 7, "hostname": "h", **kw, "msg": msg})


def _bad_mac_burst(out: list[str], err: list[str], t: float, n: int = 12) -> None:
    """What the bot prints for each message it cannot decrypt: libsignal on stderr, Baileys on stdout."""
    for i in range(n):
        err += ["Failed to decrypt message with any known session...",
                "Session error:Error: Bad MAC Error: Bad MAC",
                "    at Object.verifyMAC (/node_modules/libsignal/src/crypto.js:87:15)",
                "    at SessionCipher.doDecryptWhisperMessage (/node_modules/libsignal/src/session_cipher.js:250:16)"]
        out.append(_pino(t + i / 10, 50, "failed to decrypt message", key={"id": f"m{i}"},
                         err={"type": "Error", "message": "Bad MAC"}))


def _write(tmp: Path, out: list[str], err: list[str], err_written: float) -> dict[str, str]:
    files = {"out": str(tmp / "bot-out.log"), "err": str(tmp / "bot-error.log")}
    Path(files["out"]).write_text("\n".join(out) + "\n")
    Path(files["err"]).write_text("\n".join(err) + "\n")
    os.utime(files["err"], (err_written, err_written))
    os.utime(files["out"], (T0 + 3600, T0 + 3600))
    return files


def _cause(files: dict[str, str]) -> str:
    return diagnose_log(records_from_logs(logtail.logs_from_files(files, 262144, "pm2"))).cause


def test_an_old_bad_mac_burst_on_stderr_is_history_after_the_restart_that_fixed_it(tmp_path: Path) -> None:
    out = [_pino(T0, 30, "opened connection to WA", **{"class": "baileys"})]
    err: list[str] = []
    _bad_mac_burst(out, err, T0 + 60)
    out.append(_pino(T0 + 300, 30, "opened connection to WA", **{"class": "baileys"}))  # after the repair
    files = _write(tmp_path, out, err, err_written=T0 + 62)
    assert _cause(files) == "healthy"


def test_a_bad_mac_burst_newer_than_the_open_is_a_flood(tmp_path: Path) -> None:
    out = [_pino(T0, 30, "opened connection to WA", **{"class": "baileys"})]
    err: list[str] = []
    _bad_mac_burst(out, err, T0 + 60)
    files = _write(tmp_path, out, err, err_written=T0 + 62)
    assert _cause(files) == "corrupt_keys"


def test_the_agent_dates_each_stream_by_its_file() -> None:
    logs = {"streams": {"err": ["Failed to decrypt message with any known session...",
                                "Session error:Error: Bad MAC"] * 12,
                        "out": [_pino(T0 + 300, 30, "opened connection to WA")]}}
    assert diagnose_log(records_from_logs(logs)).cause == "corrupt_keys"  # undated: stderr goes last
    logs["mtimes"] = {"err": "2026-11-30T00:00:00Z"}
    assert diagnose_log(records_from_logs(logs)).cause == "healthy"
