"""The executor against real ansible-runner and ansible-playbook, on tiny local playbooks."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from waops.execute import RUN_PREFIX, Cancel, ExecuteError, Progress, run_playbook, runs_dir

SECRET = "pw-Zq81-not-for-disk"

PLAYBOOK = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: say hello
          ansible.builtin.debug:
            msg: "hello {{ waops_bot }}"
        - name: touch a marker
          ansible.builtin.file:
            path: "{{ marker }}"
            state: touch
        - name: use the secret
          no_log: true
          ansible.builtin.copy:
            content: "{{ db_password }}"
            dest: "{{ marker }}.secret"
            mode: "0600"
        - name: expose the QR
          ansible.builtin.set_stats:
            data:
              qr: "2@QRSTRING"
            per_host: false
    """
)

FAILING = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: this one works
          ansible.builtin.command: "true"
          changed_when: false
        - name: this one breaks
          ansible.builtin.fail:
            msg: "auth folder missing"
    """
)

SLOW = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: sleep
          ansible.builtin.command: sleep 60
    """
)

INVENTORY = "localhost ansible_connection=local ansible_python_interpreter={python}\n"


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    (tmp_path / "failing.yml").write_text(FAILING)
    (tmp_path / "slow.yml").write_text(SLOW)
    (tmp_path / "hosts").write_text(INVENTORY.format(python=sys.executable))
    return tmp_path


def _private_dirs() -> set[str]:
    return set(glob.glob(os.path.join(runs_dir(), RUN_PREFIX + "*")))


def test_successful_run_collects_progress_stats_and_set_stats(lab: Path) -> None:
    seen: list[Progress] = []
    before = _private_dirs()
    leaked: list[str] = []

    def watch() -> None:
        # While the run is going, nothing in its private dir may hold the secret in clear.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            for d in _private_dirs() - before:
                for root, _, files in os.walk(d):
                    for name in files:
                        p = os.path.join(root, name)
                        try:
                            if os.path.isfile(p) and SECRET.encode() in Path(p).read_bytes():
                                leaked.append(p)
                        except OSError:
                            pass
            time.sleep(0.05)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_playbook(
            lab / "site.yml",
            inventory=lab / "hosts",
            extravars={"waops_bot": "shop", "marker": str(lab / "marker")},
            secrets={"db_password": SECRET},
            timeout_s=120,
            on_progress=seen.append,
        )
    finally:
        done.set()
        watcher.join()

    assert result.ok, result.to_dict()
    assert result.status == "successful" and result.rc == 0
    assert (lab / "marker").exists()
    assert (lab / "marker.secret").read_text() == SECRET  # the secret did reach the play
    assert leaked == []
    stats = result.stats["localhost"]
    assert stats.failed == 0 and stats.changed >= 2 and stats.ok >= 4
    assert result.set_stats == {"qr": "2@QRSTRING"}
    assert result.debug == [{"host": "localhost", "task": "say hello", "msg": "hello shop"}]
    assert result.failures == []
    kinds = [(p.kind, p.task) for p in seen]
    assert ("task_start", "say hello") in kinds
    assert ("ok", "say hello") in kinds
    assert ("changed", "touch a marker") in kinds
    assert all(p.host == "localhost" for p in seen if p.kind != "task_start")
    # the private dir is gone
    assert _private_dirs() - before == set()
    assert SECRET not in repr(result.to_dict())


def test_failed_task_is_reported(lab: Path) -> None:
    seen: list[Progress] = []
    result = run_playbook(lab / "failing.yml", inventory=lab / "hosts", timeout_s=120, on_progress=seen.append)
    assert not result.ok and result.status == "failed" and result.rc != 0
    assert [(f.host, f.task, f.message) for f in result.failures] == [
        ("localhost", "this one breaks", "auth folder missing")
    ]
    assert result.stats["localhost"].failed == 1
    assert Progress("failed", "this one breaks", "localhost", "auth folder missing") in seen


def test_timeout_stops_the_run(lab: Path) -> None:
    started = time.monotonic()
    result = run_playbook(lab / "slow.yml", inventory=lab / "hosts", timeout_s=3)
    assert result.status == "timeout" and not result.ok
    assert time.monotonic() - started < 30


def test_cancel_stops_the_run_cleanly(lab: Path) -> None:
    cancel = Cancel()

    def on_progress(p: Progress) -> None:
        if p.kind == "task_start" and p.task == "sleep":
            threading.Timer(0.5, cancel.set).start()

    started = time.monotonic()
    result = run_playbook(lab / "slow.yml", inventory=lab / "hosts", timeout_s=120, cancel=cancel,
                          on_progress=on_progress)  # fmt: skip
    assert result.status == "canceled" and not result.ok
    assert time.monotonic() - started < 30


def test_ctrl_c_sets_the_flag_instead_of_raising(lab: Path) -> None:
    """A real SIGINT to a process running a playbook: the run is canceled, no KeyboardInterrupt."""
    code = textwrap.dedent(
        f"""\
        import sys, threading, os, signal
        from waops.execute import run_playbook, Progress
        def on_progress(p):
            if p.kind == "task_start" and p.task == "sleep":
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        r = run_playbook({str(lab / "slow.yml")!r}, inventory={str(lab / "hosts")!r}, timeout_s=120,
                         on_progress=on_progress)
        print("STATUS", r.status)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert "STATUS canceled" in out.stdout, out.stderr
    assert "KeyboardInterrupt" not in out.stderr


def test_missing_playbook_and_bad_timeout(lab: Path) -> None:
    with pytest.raises(ExecuteError):
        run_playbook(lab / "nope.yml", timeout_s=10)
    with pytest.raises(ValueError):
        run_playbook(lab / "site.yml", timeout_s=0)


def test_runner_artifacts_hold_no_secret_even_after_sigkill(lab: Path, tmp_path: Path) -> None:
    """A controller killed mid-run leaves its private dir; its artifacts/*/command (runner writes the
    whole environment there) holds no secret from the controller's environment, and the next run
    removes the leftover."""
    import shutil
    import signal
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="wst"))  # short: tmp_path is too long for ssh's control sockets
    env = {**os.environ, "XDG_STATE_HOME": str(state), "WAOPS_STORE": f"postgresql://u:{SECRET}@h/db",
           "PGPASSWORD": SECRET, "MY_API_TOKEN": SECRET, "ANSIBLE_NOCOLOR": "1"}
    code = ("from waops.execute import run_playbook; import sys; "
            f"run_playbook({str(lab / 'slow.yml')!r}, inventory={str(lab / 'hosts')!r}, timeout_s=120)")
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    runs = state / "waops" / "runs"
    deadline = time.monotonic() + 60
    commands: list[Path] = []
    while time.monotonic() < deadline and not commands:
        commands = list(runs.glob("waops-run-*/artifacts/*/command")) if runs.is_dir() else []
        time.sleep(0.1)
    time.sleep(1)
    children = _descendants(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    for pid in children:  # runner's ansible-playbook (its own session) would sleep on: end it by its pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert commands, "the run never started"
    assert oct(runs.stat().st_mode & 0o777) == "0o700"
    left = [f for f in runs.rglob("*") if f.is_file()]
    assert left and all(SECRET.encode() not in f.read_bytes() for f in left)
    assert "PATH" in commands[0].read_text()  # the file is runner's, with the environment it used
    # the next run cleans the leftover of the killed one
    q = subprocess.run([sys.executable, "-c", "from waops.execute import _private_dir; print(_private_dir())"],
                       env=env, capture_output=True, text=True, check=True)
    assert [d.name for d in runs.iterdir()] == [Path(q.stdout.strip()).name]
    shutil.rmtree(state)


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out
