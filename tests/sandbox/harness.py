"""Runs the simulator (a subprocess on 127.0.0.1) and sandbox bots (node) for the sandbox tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from waops_lab.sandbox.client import SimulatorClient

REPO = Path(__file__).resolve().parents[2]
BOT_SRC = REPO / "lab" / "waops_lab" / "sandbox" / "bot"
KEEPALIVE_DIR = REPO / "roles" / "waops_bot" / "files"


def node_binary() -> str | None:
    for candidate in (os.environ.get("WAOPS_TEST_NODE"), "/usr/bin/node", shutil.which("node")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_json(path: Path, timeout: float = 5) -> Any:
    """A JSON file that its writer may be rewriting in place (Baileys' creds.json is not atomic)."""

    def parsed() -> Any:
        try:
            return json.loads(path.read_text()) or None
        except (OSError, ValueError):
            return None

    return wait_until(parsed, timeout, what=f"{path.name} to parse")


class Sim:
    """`python -m waops_lab.sandbox serve` on free ports; stopped with SIGTERM (state saved)."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.extra = extra
        self.state_file = workdir / "sim-state.json"
        self.proc: subprocess.Popen | None = None
        self.bot_port = self.control_port = 0

    def start(self) -> Sim:
        ready = self.workdir / "sim-ready"
        ready.unlink(missing_ok=True)
        ports = []
        if self.bot_port:  # a restart keeps its ports, so running bots can find it again
            ports = ["--listen", f"127.0.0.1:{self.bot_port}", "--control", f"127.0.0.1:{self.control_port}"]
        else:
            ports = ["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]
        self.log = open(self.workdir / "sim.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "waops_lab.sandbox",
                "serve",
                *ports,
                "--state",
                str(self.state_file),
                "--ready-file",
                str(ready),
                "--link-delay",
                "0.3",
                *self.extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: ready.exists() and ready.read_text().strip(), 10, what="simulator start")
        self.bot_port, self.control_port = (int(x) for x in ready.read_text().split())
        self.client = SimulatorClient(f"http://127.0.0.1:{self.control_port}")
        return self

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.bot_port}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()



def bot_env(sim_url: str, phone: str, name: str, root: Path, **extra: str) -> dict[str, str]:
    """The environment a sandbox bot runs with (the role writes the same keys into its env file):
    files store under root/name, the keep-alive agent on NODE_PATH, quick reconnects for tests."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NODE_PATH": str(KEEPALIVE_DIR),
        "WAOPS_BOT": name,
        "WAOPS_PHONE": phone,
        "WAOPS_AUTH_STORE": "files",
        "WAOPS_AUTH_DIR": str(root / name / "auth"),
        "WAOPS_HEALTH_FILE": str(root / name / "health.json"),
        "WAOPS_SIM_URL": sim_url,
        "WAOPS_RECONNECT_DELAY_MS": "200",
        "WAOPS_CONNECT_TIMEOUT_MS": "1000",
        **extra,
    }

class Bot:
    """One sandbox bot process; its stdout (pino JSON + console lines) and stderr go to files."""

    def __init__(self, app_dir: Path, workdir: Path, name: str, env: dict[str, str]) -> None:
        self.app_dir, self.workdir, self.name = app_dir, workdir, name
        self.env = env
        self.out_path = workdir / f"{name}.out.log"
        self.err_path = workdir / f"{name}.err.log"
        self.proc: subprocess.Popen | None = None

    @property
    def auth_dir(self) -> Path:
        return Path(self.env["WAOPS_AUTH_DIR"])

    @property
    def health_file(self) -> Path:
        return Path(self.env["WAOPS_HEALTH_FILE"])

    def start(self) -> Bot:
        node = node_binary()
        assert node, "node is required"
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen([node, "index.js"], cwd=self.app_dir, env=self.env, stdout=out, stderr=err)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def out(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def err(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The pino JSON lines of stdout."""
        out = []
        for line in self.out().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def count(self, pattern: str, stream: str = "out") -> int:
        text = self.out() if stream == "out" else self.err()
        return len(re.findall(pattern, text))

    def wait_for(self, pattern: str, timeout: float = 10, count: int = 1, stream: str = "out") -> None:
        def seen() -> bool:
            if self.proc and self.proc.poll() is not None and self.count(pattern, stream) < count:
                raise AssertionError(f"bot exited ({self.proc.returncode}) before {pattern!r}:\n{self.err()}")
            return self.count(pattern, stream) >= count

        wait_until(seen, timeout, what=f"{pattern!r} x{count} in {self.name} {stream}")

    def closed_codes(self) -> list[int]:
        return [
            r["err"]["output"]["statusCode"]
            for r in self.records()
            if r.get("msg") == "connection closed" and r.get("err", {}).get("output")
        ]

    def health(self) -> dict[str, Any]:
        return read_json(self.health_file)

    def files(self, prefix: str = "") -> list[str]:
        return sorted(p.name for p in self.auth_dir.iterdir() if p.name.startswith(prefix))
