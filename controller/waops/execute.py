"""Run one playbook with ansible-runner and turn its events into progress and a RunResult.

Per run: a private dir (0700) under the controller's own 0700 `runs/` state dir, removed in `finally`,
and, after a SIGKILL left one behind, at the next run (its name carries the pid that made it);
`suppress_env_files` so runner writes no env/ files; runner's `artifacts/*/command` file (the whole
environment) gets an environment without secrets (an allow-list of what Ansible needs, see `_scrub`);
`timeout` always set; an explicit `cancel_callback` (runner then installs no signal handlers of its
own: Ctrl-C sets our flag and the run stops cleanly); a cheap event handler.

Ctrl-C never lands in the middle of a destructive step, and none starts after it: every playbook puts a
"Cancel gate" task right before each step that changes the session. Setting the flag writes a marker
file the gate looks for (`waops_cancel_file`), so the play stops itself there; while a step that passed
its gate is running, the run is not killed (killing ansible-playbook would not stop the agent on the
host, only lose its report). What those steps did is kept in `RunResult.done`.

Secrets never reach the disk in clear. Plain `extravars` end up on ansible-playbook's command line
(and in runner's artifacts/command file), so secrets take another road: they are vault-encrypted with
a one-time password into the private dir, and the password reaches ansible-playbook through a FIFO
(the way runner itself hands over SSH keys). The playbooks still mark tasks that use them `no_log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _secrets
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops.assets import asset_root, collections_path
from waops.assets import playbook as bundled_playbook
from waops.errors import WaopsError
from waops_host.process import pid_alive as _alive

DEFAULT_TIMEOUT_S = 600
_VAULT_ID = "waops_run"


class ExecuteError(WaopsError):
    pass


@dataclass(frozen=True)
class Progress:
    """One step of a run, for a progress display: task_start, ok, changed, failed, skipped, unreachable."""

    kind: str
    task: str
    host: str | None = None
    message: str = ""


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass
class RunResult:
    playbook: str
    status: str  # runner's: successful, failed, timeout, canceled
    rc: int | None
    stats: dict[str, HostStats] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    # What the playbook exposes: set_stats data (e.g. {"qr": "..."}) and debug messages per host.
    set_stats: dict[str, Any] = field(default_factory=dict)
    debug: list[dict[str, Any]] = field(default_factory=list)
    # The guarded (destructive) tasks that ran: task, rc and the agent's JSON report when it gave one.
    done: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook, "status": self.status, "rc": self.rc, "ok": self.ok,
            "stats": {h: vars(s) for h, s in self.stats.items()},
            "failures": [vars(f) for f in self.failures], "set_stats": self.set_stats, "debug": self.debug,
            "done": self.done,
        }  # fmt: skip


class Cancel:
    """A flag the runner polls. `trap_sigint()` makes Ctrl-C set it instead of raising."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._markers: list[Path] = []

    def set(self) -> None:
        self._event.set()
        for path in list(self._markers):
            _touch(path)

    def marker(self, path: Path) -> None:
        """Write `path` when the flag is set (now, if it already is): the playbooks' cancel gates read it."""
        self._markers.append(path)
        if self.is_set():
            _touch(path)

    def forget(self, path: Path) -> None:
        with contextlib.suppress(ValueError):
            self._markers.remove(path)

    def is_set(self) -> bool:
        return self._event.is_set()

    @contextlib.contextmanager
    def trap_sigint(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may set handlers; the caller sets the flag itself
            return
        previous = signal.signal(signal.SIGINT, lambda *_: self.set())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _touch(path: Path) -> None:
    # Called from a signal handler too: one small syscall, never an exception.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


# --- events ----------------------------------------------------------------------------------------

_RESULT_KINDS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
GATE_PREFIX = "Cancel gate"  # the name every playbook's cancel gate task starts with


def _message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if value:
            return str(value).strip().splitlines()[0][:500] if isinstance(value, str) else str(value)[:500]
    return ""


def _done(task: str, kind: str, res: Mapping[str, Any]) -> dict[str, Any]:
    report: Any = None
    with contextlib.suppress(ValueError, TypeError):
        report = json.loads(str(res.get("stdout") or ""))
    return {"task": task, "status": kind, "rc": res.get("rc"), "report": report}


class _Collector:
    """The event handler: cheap, keeps what the result needs, forwards progress, returns True."""

    def __init__(self, result: RunResult, on_progress: Callable[[Progress], None] | None) -> None:
        self.result = result
        self.on_progress = on_progress
        self._armed = False  # a gate passed: the next task is a destructive one
        self.guarded: str | None = None  # the destructive task running now

    def holding(self) -> bool:
        """True while a destructive step passed its gate and has not reported back: do not kill now."""
        return self._armed or self.guarded is not None

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        # A display problem must never stop a repair half-way.
        with contextlib.suppress(Exception):
            if kind == "playbook_on_task_start":
                self.guarded, self._armed = (str(data.get("task", "")) if self._armed else None), False
                self._emit(Progress("task_start", data.get("task", "")))
            elif kind in _RESULT_KINDS:
                self._result(_RESULT_KINDS[kind], data)
            elif kind == "playbook_on_stats":
                self._stats(data)
        return True

    def _emit(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def _result(self, kind: str, data: Mapping[str, Any]) -> None:
        host = str(data.get("host") or data.get("remote_addr") or "")
        task = str(data.get("task", ""))
        res = data.get("res") or {}
        if kind == "ok" and res.get("changed"):
            kind = "changed"
        if task.startswith(GATE_PREFIX):
            self._armed = kind == "ok"
        elif self.guarded is not None and task == self.guarded:
            self.guarded = None
            self.result.done.append(_done(task, kind, res))
        if kind in ("failed", "unreachable") and not data.get("ignore_errors"):
            self.result.failures.append(TaskFailure(host, task, _message(res), unreachable=kind == "unreachable"))
        if kind in ("ok", "changed") and data.get("task_action") in ("debug", "ansible.builtin.debug"):
            shown = {k: v for k, v in res.items() if not k.startswith("_") and k != "changed"}
            if shown:
                self.result.debug.append({"host": host, "task": task, **shown})
        self._emit(Progress(kind, task, host, _message(res) if kind in ("failed", "unreachable") else ""))

    def _stats(self, data: Mapping[str, Any]) -> None:
        names = {
            "ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
            "skipped": "skipped", "rescued": "rescued", "ignored": "ignored",
        }  # fmt: skip
        for key, attr in names.items():
            for host, n in (data.get(key) or {}).items():
                stats = self.result.stats.setdefault(host, HostStats())
                setattr(stats, attr, int(n))
        for host in data.get("processed") or {}:
            self.result.stats.setdefault(host, HostStats())
        self.result.set_stats = dict(data.get("artifact_data") or {})


# --- secrets ---------------------------------------------------------------------------------------


def _write_secrets(private: Path, values: Mapping[str, Any]) -> tuple[list[str], Callable[[], None]]:
    """Vault-encrypt `values` into the private dir; hand the one-time password over a FIFO.

    Returns the ansible-playbook arguments and a function that unblocks the FIFO writer if
    ansible-playbook never read it (it failed before loading its vault secrets).
    """
    from ansible.parsing.vault import VaultLib, VaultSecret

    password = _secrets.token_urlsafe(32).encode()
    secret = VaultSecret(password)
    blob = VaultLib([(_VAULT_ID, secret)]).encrypt(json.dumps(dict(values)), secret, vault_id=_VAULT_ID)
    vars_file = private / "secrets.vault"
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)

    fifo = private / "vault-pass"
    os.mkfifo(fifo, 0o600)

    def writer() -> None:
        with contextlib.suppress(OSError), open(fifo, "wb") as f:  # blocks until a reader opens it
            f.write(password)

    thread = threading.Thread(target=writer, name="waops-vault-pass", daemon=True)
    thread.start()

    def release() -> None:
        if thread.is_alive():
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            thread.join(timeout=2)

    return ["--vault-id", f"{_VAULT_ID}@{fifo}", "-e", f"@{vars_file}"], release


# --- private dirs and environment ------------------------------------------------------------------

RUN_PREFIX = "waops-run-"
# A Unix socket path holds at most 107 bytes; ssh's control sockets live under <private>/cp/<40 chars>.
_MAX_PRIVATE_LEN = 60


def runs_dir() -> Path:
    """Where runs keep their private dirs: the state dir's `runs/` (0700, this user's), or the temp
    dir when that path would be too long for ssh's control sockets."""
    from waops.locking import state_dir

    d = state_dir() / "runs"
    if len(str(d)) + len(RUN_PREFIX) + 20 > _MAX_PRIVATE_LEN:
        return Path(tempfile.gettempdir())
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def _private_dir() -> Path:
    base = runs_dir()
    clean_stale_runs(base)
    return Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-", dir=base))  # 0700


def clean_stale_runs(base: Path) -> list[Path]:
    """Remove private dirs whose run was killed (its pid is gone): they hold runner's artifacts."""
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for d in entries:
        if not d.name.startswith(RUN_PREFIX) or d.is_symlink() or not d.is_dir():
            continue
        try:
            pid = int(d.name[len(RUN_PREFIX):].split("-", 1)[0])
            if d.stat().st_uid != os.getuid():
                continue
        except (ValueError, OSError):
            continue
        if not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


# What ansible-playbook needs from the controller's environment. Anything else (a store DSN with its
# password, PGPASSWORD, tokens) stays out of the child and out of runner's artifacts/*/command file.
_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
             "SSH_AUTH_SOCK", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NO_COLOR", "COLUMNS",
             "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_ENV_KEEP_PREFIX = ("LC_", "XDG_", "ANSIBLE_")
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY", re.IGNORECASE)


def _scrub(env: Mapping[str, str], inherited: Mapping[str, str]) -> dict[str, str]:
    """`env` without what it inherited from `inherited` that is not on the allow-list. Values runner or
    waops set themselves (different from the inherited ones) stay."""
    out = {}
    for k, v in env.items():
        if k in inherited and inherited[k] == v:
            keep = k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIX)
            if keep and _SECRET_NAME.search(k) and not k.endswith("_FILE"):
                keep = False
            if keep and "@" in v and "://" in v:  # a URL with credentials (a proxy with a password)
                keep = False
            if not keep:
                continue
        out[k] = v
    return out


# --- running ---------------------------------------------------------------------------------------


def run_playbook(
    playbook: str | Path,
    *,
    inventory: str | Path | None = None,
    limit: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Cancel | None = None,
    envvars: Mapping[str, str] | None = None,
    verbosity: int = 0,
    check: bool = False,
    diff: bool = False,
) -> RunResult:
    """Run a playbook (a name under playbooks/, or a path) and return what happened.

    `secrets` are extra vars that never touch the disk in clear; `extravars` are plain ones.
    `check`/`diff` are ansible-playbook's --check and --diff.
    Raises ExecuteError only when the run could not start; a failed play is a RunResult.
    """
    import ansible_runner.interface

    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive: a run without a deadline can hang a 3 a.m. repair")
    path = Path(playbook) if os.path.sep in str(playbook) else bundled_playbook(str(playbook))
    if not path.is_file():
        raise ExecuteError(f"no such playbook: {path}")
    cancel = cancel or Cancel()
    result = RunResult(playbook=path.name, status="starting", rc=None)
    env = {
        "ANSIBLE_CONFIG": str(asset_root() / "ansible.cfg"),
        # The roles are found by their FQCN (waops.ops.waops_bot) in the bundled collection.
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        **(envvars or {}),
    }
    private = _private_dir()
    release = None
    collector = _Collector(result, on_progress)
    cancel_file = private / "cancelled"
    cancel.marker(cancel_file)
    try:
        cmdline: list[str] = []
        if secrets:
            cmdline, release = _write_secrets(private, secrets)
        cmdline += ["--check"] * check + ["--diff"] * diff
        kwargs: dict[str, Any] = {
            "private_data_dir": str(private),
            "project_dir": str(path.parent),
            "playbook": path.name,
            "envvars": env,
            "extravars": {**dict(extravars or {}), "waops_cancel_file": str(cancel_file)},
            "suppress_env_files": True,
            "timeout": int(timeout_s),
            "cancel_callback": lambda: cancel.is_set() and not collector.holding(),
            "event_handler": collector,
            "quiet": True,
            "verbosity": verbosity,
            # runner polls the cancel flag between reads; 1 s keeps Ctrl-C responsive
            "settings": {"pexpect_timeout": 1},
        }
        if cmdline:
            kwargs["cmdline"] = shlex.join(cmdline)
        if inventory is not None:
            kwargs["inventory"] = str(Path(inventory).resolve())
        if limit:
            kwargs["limit"] = limit
        with cancel.trap_sigint():
            runner = ansible_runner.interface.init_runner(**kwargs)
            runner.config.env = _scrub(runner.config.env, os.environ)
            runner.run()
        result.status = runner.status
        result.rc = runner.rc
        return result
    finally:
        cancel.forget(cancel_file)
        if release is not None:
            release()
        shutil.rmtree(private, ignore_errors=True)
