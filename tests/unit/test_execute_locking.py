"""The controller-side per-bot lock (waops.locking)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from waops.errors import WaopsError
from waops.locking import EXIT_LOCK_BUSY, BotLock, LockBusyError, state_dir


def test_second_lock_on_same_bot_is_refused(tmp_path: Path) -> None:
    with BotLock("lab-1", "shop", directory=tmp_path) as first:
        assert first.held
        with pytest.raises(LockBusyError) as err:
            BotLock("lab-1", "shop", directory=tmp_path).acquire()
        assert err.value.exit_code == EXIT_LOCK_BUSY
        # another bot, or the same bot on another host, is independent
        with BotLock("lab-1", "news", directory=tmp_path), BotLock("lab-2", "shop", directory=tmp_path):
            pass
    assert not first.held
    with BotLock("lab-1", "shop", directory=tmp_path):
        pass


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from waops.locking import BotLock\n"
        f"BotLock('lab-1', 'shop', directory=Path({str(tmp_path)!r})).acquire()\n"
        "print('held', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockBusyError, match=f"pid {proc.pid}"):
            BotLock("lab-1", "shop", directory=tmp_path).acquire()
        proc.kill()
        proc.wait()
        lock = BotLock("lab-1", "shop", directory=tmp_path, wait_s=2)
        started = time.monotonic()
        with lock:
            assert time.monotonic() - started < 2
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / "lab-1--shop.lock").stat().st_mode & 0o777 == 0o600


def test_bad_bot_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WaopsError):
        BotLock("lab-1", "../etc", directory=tmp_path)


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "waops"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "waops"
