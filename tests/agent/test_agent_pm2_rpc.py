"""`waops-host` asks the pm2 daemon over its rpc.sock for what `pm2 jlist` prints, without starting node."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from waops_host import process


def test_rpc_list_is_what_pm2_jlist_prints(tmp_path: Path) -> None:
    pm2 = os.environ.get("WAOPS_TEST_PM2_BIN") or shutil.which("pm2")
    if not pm2:
        pytest.skip("pm2 not installed (set WAOPS_TEST_PM2_BIN)")
    home = tmp_path / "pm2"
    app = tmp_path / "app.js"
    app.write_text("setInterval(() => {}, 1000);\n")
    env = {**os.environ, "PM2_HOME": str(home), "PATH": f"{Path(pm2).parent}:{os.environ['PATH']}"}
    subprocess.run([pm2, "start", str(app), "--name", "shop"], env=env, check=True, capture_output=True, timeout=60)
    try:
        time.sleep(0.5)
        rpc = process.pm2_rpc_apps(str(home))
        out = subprocess.run([pm2, "jlist"], env=env, check=True, capture_output=True, text=True, timeout=60).stdout
        jlist = json.loads(out[out.find("[") :])
        assert rpc is not None
        keys = ("name", "pid", "pm_id")
        assert [[a.get(k) for k in keys] for a in rpc] == [[a.get(k) for k in keys] for a in jlist]
        status = [(a["pm2_env"]["status"], a["pm2_env"]["restart_time"]) for a in rpc]
        assert status == [(a["pm2_env"]["status"], a["pm2_env"]["restart_time"]) for a in jlist]
        assert ("online", 0) in status
    finally:
        subprocess.run([pm2, "kill"], env=env, capture_output=True, timeout=60, check=False)


def test_no_daemon_or_a_stranger_on_the_socket_gives_none(tmp_path: Path) -> None:
    assert process.pm2_rpc_apps(str(tmp_path)) is None  # no rpc.sock: the caller falls back to pm2 jlist
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "rpc.sock"))
    srv.listen(1)

    def answer_garbage() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"\x12\x00\x00\x00\x05j:{{{\x00\x00\x00\x03s:1")  # a frame whose JSON is broken
        conn.close()

    t = threading.Thread(target=answer_garbage)
    t.start()
    try:
        assert process.pm2_rpc_apps(str(tmp_path), timeout=5) is None
    finally:
        t.join()
        srv.close()


def test_a_dripping_socket_cannot_hold_the_agent_past_its_timeout(tmp_path: Path) -> None:
    """rpc.sock lives in the bot user's PM2_HOME: a server sending a byte now and then (each recv within
    the per-call timeout) must not keep root's check waiting; the timeout bounds the whole exchange."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "rpc.sock"))
    srv.listen(1)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"\x11\xff\xff\xff\x00")  # announces a huge argument, then sends it slowly
        with contextlib.suppress(OSError):
            while not stop.wait(0.2):
                conn.sendall(b"j")
        conn.close()

    t = threading.Thread(target=drip)
    t.start()
    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(process.pm2_rpc_apps(str(tmp_path), timeout=1)))
    caller.start()
    try:
        caller.join(30)  # far beyond the 1 s budget: only a loop that never ends is still running
        assert not caller.is_alive(), "pm2_rpc_apps kept reading a dripping socket"
        assert outcome == [None]
    finally:
        stop.set()
        t.join()
        caller.join()
        srv.close()
