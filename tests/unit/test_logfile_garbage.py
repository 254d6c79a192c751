"""`waops diagnose --log-file` on garbage: a result or a clear error (exit 2 with a message), never a crash.

The CLI is driven through a subprocess for the exit codes; the rest calls waops.logparse directly."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from waops.diagnose import diagnose_log
from waops.errors import UsageError
from waops.logparse import MAX_LINE, read_log

OPEN = b'{"level":30,"time":1764400000000,"msg":"opened connection to WA"}\n'
LOGGED_OUT = b'{"level":50,"msg":"connection closed","err":{"output":{"statusCode":401}}}\n'


def waops(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", "from waops.cli import main; main()", "diagnose", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def cause(path: Path | str, window: int = 262_144) -> str:
    return diagnose_log(read_log(path, window)).cause


def test_cli_binary_file_gives_a_result_and_a_device_or_directory_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "core.bin"
    garbage.write_bytes(random.Random(7).randbytes(300_000) + b"\xff\xfe\x00" * 1000)  # seeded: same bytes each run
    r = waops("--log-file", str(garbage), "--output", "json")
    assert r.returncode == 1, r.stderr  # a result: nothing names a state
    assert json.loads(r.stdout)["results"][0]["cause"] == "unknown"
    for bad, why in ((tmp_path, b"is a directory"), ("/dev/zero", b"is a device")):
        r = waops("--log-file", str(bad))
        assert r.returncode == 2 and why in r.stderr and b"Traceback" not in r.stderr, r.stderr


def test_cli_reads_a_piped_log_from_stdin() -> None:
    r = waops("--log-file", "-", "--output", "json", stdin=b"\x00\xffjunk\n" + LOGGED_OUT)
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["results"][0]["cause"] == "logged_out"


def test_invalid_utf8_around_real_lines(tmp_path: Path) -> None:
    p = tmp_path / "mixed.log"
    p.write_bytes(b"\xc3\x28\xa0\xa1 broken \xed\xa0\x80 surrogate\n" + LOGGED_OUT + b"\xf0\x28\x8c\x28\n")
    assert cause(p) == "logged_out"


def test_ten_megabyte_line_with_and_without_a_newline(tmp_path: Path) -> None:
    p = tmp_path / "huge.log"
    p.write_bytes(OPEN + b"A" * 10_000_000 + b"\n" + LOGGED_OUT)
    assert cause(p) == "logged_out"
    p.write_bytes(LOGGED_OUT + b"{" * 10_000_000)  # ends inside the huge line: only its end is read
    records = read_log(p)
    assert len(records) == 1 and len(records[0].raw) <= MAX_LINE


def test_empty_missing_and_bad_window(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert cause(empty) == "unknown"
    with pytest.raises(UsageError, match="not found"):
        read_log(tmp_path / "nope.log")
    with pytest.raises(UsageError, match="not found"):
        read_log(tmp_path / "no-dir" / "x.log")
    with pytest.raises(UsageError, match="positive"):
        read_log(empty, window=-1)


def test_deeply_nested_json_line(tmp_path: Path) -> None:
    p = tmp_path / "nested.log"
    p.write_bytes(b'{"a":' * 990 + b"1" + b"}" * 990 + b"\n" + b"[" * 5000 + b"\n" + LOGGED_OUT)
    assert cause(p) == "logged_out"


def test_copy_truncate_hole_does_not_hide_the_next_line(tmp_path: Path) -> None:
    """pm2 keeps writing at its old offset after logrotate truncates: the file starts with a NUL hole."""
    p = tmp_path / "out.log"
    with p.open("wb") as f:
        f.truncate(5_000_000)
        f.seek(0, os.SEEK_END)
        f.write(LOGGED_OUT)
    assert cause(p) == "logged_out"


def test_utf16_log_saved_by_powershell(tmp_path: Path) -> None:
    p = tmp_path / "pasted.log"
    p.write_bytes(LOGGED_OUT.decode().encode("utf-16"))
    assert cause(p) == "logged_out"


def test_log_renamed_and_recreated_while_read(tmp_path: Path) -> None:
    """Rotation by rename (logrotate `create`, another process): the path is missing for a moment."""
    p = tmp_path / "out.log"
    p.write_bytes(LOGGED_OUT * 500)
    rotator = subprocess.Popen([sys.executable, "-c", ROTATE, str(p), OPEN.decode()])
    try:
        for _ in range(30):
            assert cause(p) in ("logged_out", "healthy", "unknown")
    finally:
        rotator.kill()
        rotator.wait()


ROTATE = """
import os, sys, time
p, line = sys.argv[1], sys.argv[2].encode()
for n in range(100_000):
    os.rename(p, p + "." + str(n % 3))
    with open(p, "wb") as f:
        f.write(line * (n % 50))
    time.sleep(0.01)
"""


def test_fifo_is_read_until_its_writer_closes(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("wb") as f:  # blocks until the reader opens it, like a shell redirection
            for _ in range(2000):
                f.write(OPEN)
            f.write(LOGGED_OUT)

    t = threading.Thread(target=write)
    t.start()
    try:
        records = read_log(fifo, window=4096)  # only the last window is kept
    finally:
        t.join()
    assert records[-1].code == 401 and len(records) < 100
