"""Fixtures for the simulator + sandbox bot tests: one simulator and one `npm ci` per session."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sandbox.harness import BOT_SRC, Bot, Sim, bot_env, node_binary

_phones = itertools.count(1)


@pytest.fixture(scope="session")
def bot_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sandbox bot with its dependencies installed by `npm ci`, as a release would be."""
    if not node_binary() or not shutil.which("npm"):
        pytest.skip("node and npm are required for the sandbox bot")
    app = tmp_path_factory.mktemp("release") / "bot"
    shutil.copytree(BOT_SRC, app, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
        cwd=app,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return app


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    s = Sim(tmp_path_factory.mktemp("sim"), "--qr-ttl", "30").start()
    yield s
    s.stop()


@pytest.fixture
def phone() -> str:
    return f"1555010{os.getpid() % 100:02d}{next(_phones):02d}"


@pytest.fixture
def make_bot(bot_app: Path, tmp_path: Path) -> Iterator[Callable[..., Bot]]:
    bots: list[Bot] = []

    def make(sim: Sim, phone: str, name: str = "shop", app: Path | None = None, **env: str) -> Bot:
        base = bot_env(sim.url, phone, name, tmp_path, **env)
        bot = Bot(app or bot_app, tmp_path, name, base)
        bots.append(bot)
        return bot.start()

    yield make
    for bot in bots:
        bot.stop()


@pytest.fixture
def linked_bot(sim: Sim, phone: str, make_bot: Callable[..., Bot]) -> Bot:
    """A bot linked by QR (the simulated phone scans it after --link-delay) and answering."""
    bot = make_bot(sim, phone)
    bot.wait_for("uploaded pre-keys")
    return bot
