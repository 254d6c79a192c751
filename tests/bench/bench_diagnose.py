"""On-demand benchmark (not collected by pytest): `python tests/bench/bench_diagnose.py`.

Prints: `waops diagnose --log-file` on a 2 MB and a 2 GB log (the 2 GB one is sparse with a real
tail, so it costs no disk, and is deleted afterwards), and `waops --help` wall time. The log read is
bounded (a window from the end), so the 2 GB figure must stay within 20% of the 2 MB one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TAIL = (b'{"level":30,"time":"2026-11-22T07:00:00.000Z","msg":"opened connection to WA"}\n'
        + b"Session error:Error: Bad MAC Error: Bad MAC\n" * 20
        + b'{"level":30,"time":"2026-11-22T07:10:00.000Z","msg":"connection closed",'
          b'"err":{"output":{"statusCode":401}}}\n')
LINE = b'2026-11-22T07:00:00: {"level":30,"msg":"received message","key":{"remoteJid":"x@s.whatsapp.net"}}\n'


def make_log(path: Path, size: int, sparse: bool) -> None:
    with path.open("wb") as f:
        if sparse:
            f.truncate(size - 4 * 1024 * 1024)  # a hole: costs nothing on disk
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        body = LINE * (((4 * 1024 * 1024 if sparse else size) - len(TAIL)) // len(LINE))
        f.write(body + TAIL)


def run(*args: str) -> float:
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", *args],
                       capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if p.returncode not in (0, 1):
        raise SystemExit(f"waops {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return took


def in_process(path: Path, n: int = 20) -> float:
    from waops.diagnose import diagnose_log
    from waops.logparse import read_log

    times = []
    for _ in range(n):
        start = time.perf_counter()
        d = diagnose_log(read_log(path))
        times.append(time.perf_counter() - start)
    assert d.cause == "logged_out", d
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="waops-bench-") as tmp:
        small, big = Path(tmp) / "2mb.log", Path(tmp) / "2gb.log"
        make_log(small, 2 * 1024 * 1024, sparse=False)
        make_log(big, 2 * 1024 * 1024 * 1024, sparse=True)
        print(f"log sizes: {small.stat().st_size / 2**20:.0f} MiB, {big.stat().st_size / 2**30:.1f} GiB "
              f"(sparse, {big.stat().st_blocks * 512 / 2**20:.0f} MiB on disk)")
        a, b = in_process(small), in_process(big)
        print(f"read+diagnose in process (median of 20): 2 MB {a * 1000:.2f} ms, 2 GB {b * 1000:.2f} ms, "
              f"ratio {b / a:.2f}")
        ca = statistics.median(run("diagnose", "--log-file", str(small), "--output", "json") for _ in range(5))
        cb = statistics.median(run("diagnose", "--log-file", str(big), "--output", "json") for _ in range(5))
        print(f"waops diagnose --log-file (median of 5, whole command): 2 MB {ca * 1000:.0f} ms, "
              f"2 GB {cb * 1000:.0f} ms, ratio {cb / ca:.2f}")
    helps = [run("--help") for _ in range(7)]
    print(f"waops --help: median {statistics.median(helps) * 1000:.0f} ms, min {min(helps) * 1000:.0f} ms "
          f"(target < 300 ms)")


if __name__ == "__main__":
    main()
