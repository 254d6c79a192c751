"""The bot's process as pm2 (over its rpc socket) or systemd reports it."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

from .base import open_regular

if TYPE_CHECKING:
    from .config import BotConfig


def run_quiet(cmd: list[str], timeout: float = 5.0, **kw: Any) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return None


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (someone else's too); a zombie counts as gone. The one owner: the
    controller's runner and lab import it from here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pm2_daemon_alive(pm2_home: str) -> bool:
    try:
        with open_regular(os.path.join(pm2_home, "pm2.pid")) as f:  # the bot user's file: no link
            pid = int(f.read(32).strip())
    except (OSError, ValueError):
        return False
    return pid > 0 and pid_alive(pid)


def process_pm2(cfg: BotConfig, daemons: dict[str, list[Any] | None] | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """`daemons`: the app lists already asked of pm2 daemons in this run, by PM2_HOME (bots that share a
    daemon, as adopted apps under root's often do, ask it once)."""
    proc: dict[str, Any] = {"manager": "pm2", "status": "missing", "restarts": None, "unstable_restarts": None,
                            "uptime_s": None, "instances": 0, "pid": None, "exit_code": None}
    logs = {"out": os.path.join(cfg.pm2_home, "logs", f"{cfg.service_name}-out.log"),
            "err": os.path.join(cfg.pm2_home, "logs", f"{cfg.service_name}-error.log")}
    if isinstance(cfg.doc.get("pm2_logs"), dict):  # an adopted app's own out_file/error_file (pm2 down)
        logs.update({k: str(v) for k, v in cfg.doc["pm2_logs"].items() if k in ("out", "err") and v})
    pm2 = shutil.which("pm2") or next((p for p in ("/usr/local/bin/pm2", "/usr/bin/pm2") if os.path.exists(p)),
                                      None)
    if not pm2:
        proc["error"] = "pm2 not installed"
        return proc, logs
    # `pm2 jlist` would start a daemon when none runs: look before we ask.
    if not pm2_daemon_alive(cfg.pm2_home):
        proc.update(status="stopped", error="pm2 daemon not running")
        return proc, logs
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PM2_HOME": cfg.pm2_home,
           "HOME": os.path.dirname(cfg.pm2_home.rstrip("/"))}
    kw: dict[str, Any] = {"env": env}
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(cfg.user)
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    if daemons is not None and cfg.pm2_home in daemons:
        apps = daemons[cfg.pm2_home]
    else:  # the daemon's list over its socket; `pm2 jlist` only as a fallback
        apps = pm2_rpc_apps(cfg.pm2_home)
        if daemons is not None:
            daemons[cfg.pm2_home] = apps
    if apps is not None:
        return pm2_status(proc, logs, apps, cfg.service_name)
    p = run_quiet([pm2, "jlist"], timeout=10, **kw)
    if p is None or p.returncode != 0:
        proc["error"] = "pm2 jlist failed"
        return proc, logs
    try:
        out = p.stdout.decode("utf-8", "replace")
        apps = json.loads(out[out.find("["):])  # pm2 may print a banner before the JSON
    except ValueError:
        proc["error"] = "pm2 jlist gave no JSON"
        return proc, logs
    return pm2_status(proc, logs, apps, cfg.service_name)


def pm2_rpc_apps(pm2_home: str, timeout: float = 5.0) -> list[Any] | None:
    """What `pm2 jlist` prints (the daemon's getMonitorData), asked over the daemon's rpc.sock directly:
    a few ms instead of starting node and the pm2 CLI (~0.5 s, most of a pm2 host's facts time).
    pm2 speaks axon there: amp frames, one byte (version 1 << 4 | argc), then per argument a 4-byte
    big-endian length and `j:`JSON or `s:`string; a request is [call, id], the reply [{args}, id].
    None on any trouble (old pm2, no access, odd reply): the caller falls back to `pm2 jlist`."""
    def frame(*args: Any) -> bytes:
        out = bytearray([0x10 | len(args)])
        for a in args:
            data = b"s:" + a.encode() if isinstance(a, str) else b"j:" + json.dumps(a).encode()
            out += len(data).to_bytes(4, "big") + data
        return bytes(out)

    def parse(buf: bytes) -> list[Any] | None:  # None: the frame is not complete yet
        if not buf:
            return None
        pos, args = 1, []
        for _ in range(buf[0] & 0x0F):
            if len(buf) < pos + 4:
                return None
            n = int.from_bytes(buf[pos:pos + 4], "big")
            if len(buf) < pos + 4 + n:
                return None
            data, pos = buf[pos + 4:pos + 4 + n], pos + 4 + n
            args.append(json.loads(data[2:]) if data[:2] == b"j:" else data[2:].decode("utf-8", "replace"))
        return args

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    # One deadline for the whole exchange: the socket is the bot user's, and a byte every few seconds
    # would otherwise keep root's check waiting forever (settimeout bounds each recv only).
    deadline = time.monotonic() + timeout
    try:
        sock.connect(os.path.join(pm2_home, "rpc.sock"))
        sock.sendall(frame({"type": "call", "method": "getMonitorData", "args": [{}]}, "waops-host:1"))
        buf = b""
        while (msg := parse(buf)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk or len(buf) > 64 << 20:
                return None
            buf += chunk
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    reply = msg[0] if msg else None
    if not isinstance(reply, dict) or "error" in reply or not isinstance(reply.get("args"), list):
        return None
    apps = reply["args"][0] if reply["args"] else None
    return apps if isinstance(apps, list) else None


def pm2_status(proc: dict[str, Any], logs: dict[str, str], apps: Any,
               name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill the process facts from `pm2 jlist` (a JSON array of apps)."""
    mine = [a for a in apps if isinstance(a, dict) and a.get("name") == name] if isinstance(apps, list) else []
    if not mine:
        return proc, logs
    a = mine[0]
    env2 = a.get("pm2_env") or {}
    up = env2.get("pm_uptime")
    proc.update(status=env2.get("status"), restarts=env2.get("restart_time"),
                unstable_restarts=env2.get("unstable_restarts"), pid=a.get("pid") or None,
                exit_code=env2.get("exit_code"), pm2_instances=len(mine),
                uptime_s=int(time.time() - up / 1000) if isinstance(up, (int, float)) and
                env2.get("status") == "online" else None)
    logs = {"out": env2.get("pm_out_log_path") or logs["out"], "err": env2.get("pm_err_log_path") or logs["err"]}
    return proc, logs


SHOW_PROPS = ("ActiveState,SubState,NRestarts,ExecMainPID,ExecMainStartTimestampMonotonic,ExecMainStatus,"
              "LoadState,Result")


def unit_of(cfg: BotConfig) -> str:
    return cfg.service_name if "." in cfg.service_name else f"{cfg.service_name}.service"


def show_units(units: list[str]) -> dict[str, str]:
    """`systemctl show -p ...` of several units in one call (one block per unit, in order, blank-line
    separated); {} when the output cannot be split that way, and each bot then asks for its own."""
    units = list(dict.fromkeys(units))
    if not units:
        return {}
    p = run_quiet(["systemctl", "show", *units, "-p", SHOW_PROPS])
    if p is None or p.returncode != 0:
        return {}
    blocks = p.stdout.decode("utf-8", "replace").strip("\n").split("\n\n")
    return dict(zip(units, blocks, strict=True)) if len(blocks) == len(units) else {}


def process_systemd(cfg: BotConfig, shown: str | None = None) -> dict[str, Any]:
    """`shown`: this unit's block of a `show_units` call made for all the host's bots."""
    unit = unit_of(cfg)
    proc: dict[str, Any] = {"manager": "systemd", "unit": unit, "status": "missing", "restarts": None,
                            "unstable_restarts": None, "uptime_s": None, "instances": 0, "pid": None,
                            "exit_code": None}
    if shown is not None:
        return systemd_status(proc, shown)
    p = run_quiet(["systemctl", "show", unit, "-p", SHOW_PROPS])
    if p is None or p.returncode != 0:
        proc["error"] = "systemctl show failed"
        return proc
    return systemd_status(proc, p.stdout.decode("utf-8", "replace"))


def systemd_status(proc: dict[str, Any], show: str) -> dict[str, Any]:
    """Fill the process facts from `systemctl show -p ...` output (KEY=VALUE lines)."""
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        return proc
    proc["status"] = props.get("ActiveState") or "unknown"
    proc["sub_state"] = props.get("SubState")
    with contextlib.suppress(ValueError):
        proc["restarts"] = int(props.get("NRestarts", ""))
    with contextlib.suppress(ValueError):
        proc["pid"] = int(props.get("ExecMainPID", "0")) or None
    with contextlib.suppress(ValueError):
        proc["exit_code"] = int(props.get("ExecMainStatus", ""))
    with contextlib.suppress(ValueError):
        start = int(props.get("ExecMainStartTimestampMonotonic", "0"))
        if start and proc["status"] == "active":
            proc["uptime_s"] = int(time.clock_gettime(time.CLOCK_MONOTONIC) - start / 1e6)
    return proc


def adopted_instance(cfg: BotConfig, pid: str, cmd: bytes) -> bool:
    """An adopted bot names no auth dir on its command line or environment: a node process whose working
    directory is the bot's is one of its instances (pm2 and a copy started by hand both run there)."""
    if not cfg.adopted or cfg.workdir is None:
        return False
    prog = os.path.basename(cmd.split(b"\0", 1)[0].split(b" ", 1)[0])
    if not prog.startswith(b"node"):
        return False
    try:
        return os.readlink(f"/proc/{pid}/cwd") == cfg.workdir
    except OSError:
        return False


class ProcTable:
    """The processes of the host, each one's command line, environment and parent read from /proc at
    most once: the bots of one facts run share one pass instead of one each."""

    def __init__(self) -> None:
        self._read: dict[tuple[str, str], bytes | OSError] = {}
        me = os.getpid()
        self.pids = [d for d in os.listdir("/proc") if d.isdigit() and int(d) != me]

    def read(self, pid: str, name: str, limit: int = -1) -> bytes:
        got = self._read.get((pid, name))
        if got is None:
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    got = f.read(limit)
            except OSError as e:
                got = e
            self._read[(pid, name)] = got
        if isinstance(got, OSError):
            raise got
        return got


def count_instances(cfg: BotConfig, procs: ProcTable | None = None) -> int:
    """Processes running this bot with the same auth dir (a duplicate means 440/Bad MAC)."""
    hits: dict[int, int] = {}  # pid -> ppid
    procs = procs or ProcTable()
    for d in procs.pids:
        try:
            cmd = procs.read(d, "cmdline", 8192)
            if not cmd or cmd.startswith(b"PM2") or b"waops-host" in cmd:
                continue
            same = cfg.auth_dir.encode() in cmd or adopted_instance(cfg, d, cmd)
            if not same:
                env = procs.read(d, "environ", 65536).split(b"\0")
                # The auth dir, not the bot name: two hosts' sandboxes may both call a bot "shop".
                same = f"WAOPS_AUTH_DIR={cfg.auth_dir}".encode() in env or (
                    f"WAOPS_AUTH_DIR={cfg.auth_dir}/".encode() in env)
            if same:
                ppid = int(procs.read(d, "stat").rsplit(b")", 1)[1].split()[1])
                hits[int(d)] = ppid
        except (OSError, ValueError, IndexError):
            continue
    # A child (worker, shell wrapper's node) of a counted process is the same instance.
    return sum(1 for pid, ppid in hits.items() if ppid not in hits)
