"""On-demand benchmark (not collected by pytest): `python tests/bench/bench_diagnose.py [--lab] [--keep]`.

Prints: `waops diagnose --log-file` on a 2 MB and a 2 GB log (the 2 GB one is sparse with a real
tail, so it costs no disk, and is deleted afterwards) and on a real 100 MB log (goal < 1 s), and
`waops --help` wall time, and the facts of a host without the agent, which get the agent streamed (here:
this machine, no SSH in the figure). The log read is bounded (a window from the end), so the 2 GB
figure must stay within 20% of the 2 MB one. The bytecode of waops, waops_host and waops_lab is written
first (compileall), as an installed waops has it. The three goals are printed together at the end.

With --lab (root, lab `bench16`): 16 lab hosts (pm2 and systemd in turn) provisioned once with
`playbooks/site.yml` (its wall time is printed on its own: it is the setup, not the measure), then
- against one host (`bench16-1`, pm2): `waops diagnose HOST` beside the runbook's manual check, three
  separate ssh calls run as a script (`pm2 status`, `pm2 logs --lines 50 | grep`, `find AUTH_DIR -type f |
  wc -l`), each the median of 5 whole commands, and their ratio (goal: waops <= 0.3x, while also
  naming the cause), with where waops' start-up goes (python -X importtime);
- 16 hosts in one call: `waops diagnose --all` (target under 2.5 s), and where its time goes (per-host
  round trip, classification);
- 16 hosts, direct and through a bastion (the first host as the jump for all, by a ProxyCommand in
  ansible_ssh_common_args), each cold (an empty ControlPath directory: every host's handshake) and
  warm (the connection masters of the run before, as ControlPersist keeps them for 60 s);
- 16 hosts x 8 bots (128 bots) in one call (goal < 2 s): seven more bot configs per host for the run.
Lab name: $WAOPS_BENCH_LAB (default bench16).
--keep leaves the lab up (a second run reuses it and skips site.yml); otherwise it is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.lab helpers

TAIL = (
    b'{"level":30,"time":"2026-11-22T07:00:00.000Z","msg":"opened connection to WA"}\n'
    + b"Session error:Error: Bad MAC Error: Bad MAC\n" * 20
    + b'{"level":30,"time":"2026-11-22T07:10:00.000Z","msg":"connection closed",'
    b'"err":{"output":{"statusCode":401}}}\n'
)
LINE = b'2026-11-22T07:00:00: {"level":30,"msg":"received message","key":{"remoteJid":"x@s.whatsapp.net"}}\n'


def make_log(path: Path, size: int, sparse: bool) -> None:
    with path.open("wb") as f:
        if sparse:
            f.truncate(size - 4 * 1024 * 1024)  # a hole: costs nothing on disk
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        body = LINE * (((4 * 1024 * 1024 if sparse else size) - len(TAIL)) // len(LINE))
        f.write(body + TAIL)


# The three goals, as one run measured them: (figure, goal, holds), printed together at the end.
GOALS: dict[str, tuple[str, str, bool]] = {}


def goal(name: str, figure: str, target: str, holds: bool) -> str:
    GOALS[name] = (figure, target, holds)
    return f"goal {target}: {'holds' if holds else 'MISSED'}"


def print_goals() -> None:
    print("goals of this run:")
    for name in ("one host", "128 bots", "--log-file 100 MB"):
        figure, target, holds = GOALS.get(name, ("not measured", "", False))
        print(f"  {name}: {figure} ({target}: {'holds' if holds else 'MISSED'})")


def waops(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", "from waops.cli import main; main()", *args], capture_output=True, text=True,
        check=False, env={**os.environ, **(env or {})},
    )
    took = time.perf_counter() - start
    if p.returncode not in (0, 1, 3):  # 3: a host missed its deadline (the rows say which)
        raise SystemExit(f"waops {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return took, p


def run(*args: str) -> float:
    return waops(*args)[0]


def in_process(path: Path, n: int = 20) -> float:
    from waops import rules
    from waops.diagnose import diagnose_log
    from waops.logparse import read_log

    times = []
    for _ in range(n):
        rules._MEMO.clear()  # each read is a first read: the classifier's memo must not serve the last one
        start = time.perf_counter()
        d = diagnose_log(read_log(path))
        times.append(time.perf_counter() - start)
    assert d.cause == "logged_out", d
    return statistics.median(times)


def full_window_facts() -> dict:
    """One bot's facts as the agent sends them at most: 64 KiB of raw lines in each of its two streams,
    long Baileys pino lines (fixture lines and 'stream errored' objects, ~1,000 characters each)."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
    lines = [
        ln
        for f in sorted(fixtures.glob("*.log"))
        for ln in f.read_bytes().decode("utf-8", "replace").splitlines()
        if ln.strip()
    ]

    def line(i: int) -> str:
        if i % 2:
            return lines[i * 7 % len(lines)][:1000] + f" #{i}"
        node = {
            "tag": "stream:error",
            "attrs": {"code": "515"},
            "content": [{"tag": "x" * 20, "attrs": {"id": str(i) * 40}}] * 10,
        }
        return json.dumps({"level": 50, "time": 1764400000000 + i, "msg": "stream errored out", "node": node})[:1000]

    def stream(start: int) -> list[str]:  # the agent ships at most 64 KiB of raw lines a stream
        out: list[str] = []
        size, i = 0, start
        while size + len(line(i)) + 1 <= 65536:
            out.append(line(i))
            size += len(out[-1]) + 1
            i += 1
        return out

    return {
        "bot": "shop",
        "process": {"manager": "pm2", "status": "online", "restarts": 0},
        "health": None,
        "logs": {"source": "pm2", "streams": {"out": stream(0), "err": stream(1000)}},
        "auth": {"store": "files", "file_count": 40},
    }


def bench_classify(n: int = 20) -> None:
    """Classification of a full facts window, with the rule prefilter and with every rule's regex run on
    every line (what it cost before the prefilter): pure Python under the GIL, once per bot."""
    from waops import rules
    from waops.diagnose import diagnose

    bot = full_window_facts()

    def per_bot() -> float:
        took = 0.0
        for _ in range(n):
            rules._MEMO.clear()  # a first classification of the window, not the memo's answer
            start = time.perf_counter()
            diagnose(bot)
            took += time.perf_counter() - start
        return took / n

    fast = per_bot()
    saved = rules._PREFILTER

    class Everything:
        def candidates(self, _text: str) -> range:
            return range(len(rules.COMPILED))

    rules._PREFILTER = Everything()  # type: ignore[assignment]
    try:
        slow = per_bot()
    finally:
        rules._PREFILTER = saved
    print(
        f"classification of a full facts window (220 long lines), per bot: {fast * 1000:.1f} ms with the "
        f"prefilter, {slow * 1000:.1f} ms running every rule regex on every line; x16 bots: "
        f"{fast * 16 * 1000:.0f} ms vs {slow * 16 * 1000:.0f} ms"
    )


def bench_logs() -> None:
    with tempfile.TemporaryDirectory(prefix="waops-bench-") as tmp:
        small, big = Path(tmp) / "2mb.log", Path(tmp) / "2gb.log"
        make_log(small, 2 * 1024 * 1024, sparse=False)
        make_log(big, 2 * 1024 * 1024 * 1024, sparse=True)
        print(
            f"log sizes: {small.stat().st_size / 2**20:.0f} MiB, {big.stat().st_size / 2**30:.1f} GiB "
            f"(sparse, {big.stat().st_blocks * 512 / 2**20:.0f} MiB on disk)"
        )
        a, b = in_process(small), in_process(big)
        print(
            f"read+diagnose in process (median of 20): 2 MB {a * 1000:.2f} ms, 2 GB {b * 1000:.2f} ms, "
            f"ratio {b / a:.2f}"
        )
        ca = statistics.median(run("diagnose", "--log-file", str(small), "--output", "json") for _ in range(5))
        cb = statistics.median(run("diagnose", "--log-file", str(big), "--output", "json") for _ in range(5))
        print(
            f"waops diagnose --log-file (median of 5, whole command): 2 MB {ca * 1000:.0f} ms, "
            f"2 GB {cb * 1000:.0f} ms, ratio {cb / ca:.2f}"
        )
        hundred = Path(tmp) / "100mb.log"
        make_log(hundred, 100 * 1024 * 1024, sparse=False)
        c100 = statistics.median(run("diagnose", "--log-file", str(hundred), "--output", "json") for _ in range(5))
        print(f"waops diagnose --log-file on a 100 MB log (real, not sparse; median of 5, whole command): "
              f"{c100 * 1000:.0f} ms ({goal('--log-file 100 MB', f'{c100:.2f} s', '< 1 s', c100 < 1)})")
    helps = [run("--help") for _ in range(7)]
    print(
        f"waops --help: median {statistics.median(helps) * 1000:.0f} ms, min {min(helps) * 1000:.0f} ms "
        f"(target < 300 ms)"
    )


# ------------------------------------------------------------------------------------------ lab
LAB_HOSTS = int(os.environ.get("WAOPS_BENCH_HOSTS", "16"))  # fewer for a quick one-host figure


def bench_streamed(rounds: int = 15) -> None:
    """waops.facts.collect on a host without waops-host (a local transport: no SSH in the figure), so the
    agent is streamed to python3 each time, in one exchange after the probe's exit 97."""
    from waops.facts import agent_bytes, collect
    from waops.transport import LocalTransport

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "cfg").mkdir()
        (root / "cfg" / "shop.json").write_text(json.dumps({
            "schema": 1, "name": "shop", "user": "root", "service_manager": "systemd",
            "service_name": "waops-bench-none.service", "release_root": str(root / "rel"), "auth_store": "files",
            "auth_dir": str(root / "auth"), "health_file": str(root / "health.json"),
            "backup_dir": str(root / "bk"), "backup_keep": 3, "library_package": "baileys",
            "expected_library_version": "6.7.18", "known_bad_versions": []}))
        env = {"WAOPS_CONFIG_DIR": str(root / "cfg"), "PATH": "/usr/bin:/bin"}
        times, cpu = [], []
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            doc = collect(LocalTransport("bench", env=env), 60)
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the host side's CPU: steadier than wall time
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            assert doc.bots[0].bot == "shop"
    print(f"facts with the agent streamed (local, {len(agent_bytes()) // 1024} KiB sent), {rounds} rounds: "
          f"median {statistics.median(times):.3f} s, best {min(times):.3f} s, host CPU median "
          f"{statistics.median(cpu):.3f} s (load average {os.getloadavg()[0]:.1f})")


def run_site_from(inventory: Path, commit: str | None):
    """site.yml from the working tree, or from a commit exported to a temporary directory (in a shared
    checkout, someone's half-done role edit must not break the setup)."""
    from tests.lab.test_provision_support import PlaybookRun, run_site

    if not commit:
        return run_site(inventory, timeout=3600)
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="waops-bench-src-") as src:
        archive = subprocess.run(["git", "-C", str(root), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", src], input=archive.stdout, check=True)
        env = dict(os.environ, ANSIBLE_CONFIG=f"{src}/ansible.cfg", ANSIBLE_NOCOLOR="1")
        start = time.monotonic()
        p = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), f"{src}/playbooks/site.yml"],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        return PlaybookRun(p.returncode, time.monotonic() - start, p.stdout + p.stderr)


LAB_NAME = os.environ.get("WAOPS_BENCH_LAB", "bench16")


def provisioned_lab(commit: str | None, update: bool = False):
    """Lab `bench16` ($WAOPS_BENCH_LAB): 16 hosts after one site.yml run (reused when a kept one is there)."""
    from waops_lab.lab import Lab, LabSettings

    base = LabSettings.from_env()
    lab = Lab(LabSettings(name=LAB_NAME, cache_dir=base.cache_dir, runtime_root=base.runtime_root))
    marker = lab.settings.dir / "bench-provisioned"
    if marker.exists() and len(lab.hosts()) == LAB_HOSTS and all(r["running"] for r in lab.status()):
        print(f"reusing lab {LAB_NAME} ({LAB_HOSTS} hosts, provisioned before)")
        if update:
            site = run_site_from(lab.inventory_dir, commit)
            print(f"site.yml again (updates the agent and roles): {site.seconds:.0f} s (rc {site.rc})")
            if site.rc != 0:
                print(site.tail(40))
                raise SystemExit("site.yml failed")
        return lab, lab.inventory_dir
    lab.down(log=lambda _m: None)
    start = time.perf_counter()
    inventory = lab.up(LAB_HOSTS, ("pm2", "systemd"), log=lambda _m: None)
    booted = time.perf_counter() - start
    site = run_site_from(inventory, commit)
    print(
        f"setup (not the measure): {LAB_HOSTS} hosts booted in {booted:.1f} s, site.yml first run "
        f"{site.seconds:.0f} s (rc {site.rc}{', from ' + commit if commit else ''})"
    )
    if site.rc != 0:
        print(site.tail(40))
        raise SystemExit("site.yml failed")
    marker.write_text("1")
    return lab, inventory


def wait_linked(lab, skip: tuple[str, ...] = (), timeout: float = 180) -> None:
    """Every bot wrote a health file saying `open` (the simulator links them after a short delay)."""
    deadline = time.monotonic() + timeout
    pending = {h.name for h in lab.hosts()} - set(skip)
    while pending and time.monotonic() < deadline:
        for h in [h for h in lab.hosts() if h.name in pending]:
            out = lab.ssh(h, "cat /var/lib/waops/bots/shop/health.json 2>/dev/null", timeout=20)
            if '"connection": "open"' in out or '"connection":"open"' in out:
                pending.discard(h.name)
        if pending:
            time.sleep(2)
    if pending:
        print(f"not linked after {timeout:.0f} s: {sorted(pending)}")


MANUAL = """#!/bin/sh
# The runbook's manual check: three separate ssh calls (what an operator types at 3 a.m.).
H=root@{ip}
SSH="ssh {opts}"
BOT="su -s /bin/sh wa-shop -c"
ENV="PATH=/usr/local/bin:/usr/bin:/bin PM2_HOME=/var/lib/waops/bots/shop/.pm2"
$SSH $H "$BOT '$ENV pm2 status'"
$SSH $H "$BOT '$ENV pm2 logs shop --lines 50 --nostream' | grep -iE 'close|error|logged|conflict|bad mac|401|440|515'"
$SSH $H "find /var/lib/waops/bots/shop/auth -type f | wc -l"
"""


def inject_logged_out(lab, host, inventory: Path, timeout: float = 90) -> None:
    """The bench host gets a real fault (the simulator revokes its device), so that the diagnosis has a
    cause to name; wait until the bot has seen it."""
    from waops_lab.lab.faults import inject
    from waops_lab.sandbox.client import SimulatorError

    try:
        inject(lab, host.name, "logged_out")
    except SimulatorError as exc:  # a kept lab: the device was revoked by the last run already
        print(f"  {host.name}: {exc}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, w = waops("diagnose", "-i", str(inventory), host.name, "--output", "json")
        if json.loads(w.stdout)["results"][0]["cause"] == "logged_out":
            return
        time.sleep(2)
    print(f"  {host.name}: logged_out not seen within {timeout:.0f} s")


def bench_one_host(lab, inventory: Path, rounds: int = 5) -> None:
    from waops_lab.lab.container import ssh_options

    host = lab.hosts()[0]
    assert host.service_manager == "pm2", host
    inject_logged_out(lab, host, inventory)
    opts = " ".join(shlex.quote(o) for o in ssh_options(lab.image.key, lab.known_hosts))
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(MANUAL.format(ip=host.ip, opts=opts))
        script = f.name
    try:
        manual, waops_s = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            p = subprocess.run(["sh", script], capture_output=True, text=True, check=False)
            manual.append(time.perf_counter() - start)
            took, w = waops("diagnose", "-i", str(inventory), host.name, "--output", "json")
            waops_s.append(took)
        row = json.loads(w.stdout)["results"][0]
        out = p.stdout.strip().splitlines()
        print(f"one host ({host.name}, pm2, logged_out injected), median of {rounds} whole commands:")
        print(
            f"  waops diagnose {statistics.median(waops_s):.2f} s (min {min(waops_s):.2f}): cause "
            f"{row['cause']} code {row['code']} confidence {row['confidence']}"
        )
        print(
            f"  manual check, 3 ssh calls {statistics.median(manual):.2f} s (min {min(manual):.2f}): names no "
            f"cause; {len(out)} lines for a person to read, auth files {out[-1] if out else '?'}"
        )
        ratio = statistics.median(waops_s) / statistics.median(manual)
        figure = f"{ratio:.2f}x ({statistics.median(waops_s):.2f} s / {statistics.median(manual):.2f} s)"
        verdict = goal("one host", figure, "<= 0.3x", ratio <= 0.3)
        print(f"  ratio waops / runbook's three calls: {ratio:.2f}x ({verdict}), waops reusing its SSH connection "
              f"(ControlPersist)")
        cold = [waops("diagnose", "-i", str(inventory), host.name, "--output", "json", env=fresh_control_dir())[0]
                for _ in range(3)]
        print(f"  cold (no connection to reuse, as after a minute idle): {statistics.median(cold):.2f} s, ratio "
              f"{statistics.median(cold) / statistics.median(manual):.2f}x")
        import_profile(inventory, host.name)
        bench_transports(inventory, host.name)
    finally:
        os.unlink(script)


_CONTROL_DIRS: list[str] = []


def fresh_control_dir() -> dict[str, str]:
    """An empty ControlPath directory: the run has no SSH connection master to reuse (a cold start)."""
    d = tempfile.mkdtemp(prefix="waops-bench-cp-")
    _CONTROL_DIRS.append(d)
    return {"ANSIBLE_SSH_CONTROL_PATH_DIR": d}


def close_masters() -> None:
    """The masters of the cold runs would stay 60 s: ask each to exit now."""
    import glob

    for d in _CONTROL_DIRS:
        for sock in glob.glob(f"{d}/*"):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, check=False)
    _CONTROL_DIRS.clear()


def jump_inventory(lab, inventory: Path) -> Path:
    """The same hosts, every one reached through the first as a bastion (a ProxyCommand in
    ansible_ssh_common_args, Ansible's FAQ recipe): what the bastion route adds to a fleet diagnose."""
    gate = lab.hosts()[0]
    doc = json.loads((inventory / "hosts.yml").read_text())
    v = doc["all"]["vars"]
    v["ansible_ssh_common_args"] += f' -o ProxyCommand="{lab.proxy_command(gate, lab.image.key)}"'
    out = Path(tempfile.mkdtemp(prefix="waops-bench-jump-"))
    (out / "hosts.yml").write_text(json.dumps(doc))
    (out / "group_vars").symlink_to(inventory / "group_vars")
    return out


def bench_transports(inventory: Path, host: str, rounds: int = 5) -> None:
    """One host's facts round trip in process: paramiko (connect each time, as before) against OpenSSH
    cold (a handshake) and warm (the ControlPersist master reused): why the probe runs OpenSSH."""
    from waops import inventory as inv
    from waops.facts import collect
    from waops.openssh import OpenSSHTransport
    from waops.transport import SSHTransport, ssh_target

    (h,) = inv.load(str(inventory), [host])

    def once(make, source: bytes | None = b"") -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        t = make()
        try:
            collect(t, 30, source=source)
        finally:
            t.close()
        return time.perf_counter() - start

    def cold() -> OpenSSHTransport:
        os.environ.update(fresh_control_dir())
        return OpenSSHTransport(h, time.monotonic() + 30)

    saved = os.environ.get("ANSIBLE_SSH_CONTROL_PATH_DIR")
    try:
        para = [once(lambda: SSHTransport(ssh_target(h), time.monotonic() + 30)) for _ in range(rounds)]
        colds = [once(cold) for _ in range(rounds)]
        once(cold)  # opens the master the warm runs reuse
        warm = [once(lambda: OpenSSHTransport(h, time.monotonic() + 30)) for _ in range(rounds)]
        warm_src = [once(lambda: OpenSSHTransport(h, time.monotonic() + 30), None) for _ in range(rounds)]
    finally:
        if saved is None:
            os.environ.pop("ANSIBLE_SSH_CONTROL_PATH_DIR", None)
        else:
            os.environ["ANSIBLE_SSH_CONTROL_PATH_DIR"] = saved
        close_masters()
    print(f"  facts round trip of {host} in process, median of {rounds}: paramiko {statistics.median(para):.3f} s, "
          f"OpenSSH cold {statistics.median(colds):.3f} s, OpenSSH warm (ControlPersist) "
          f"{statistics.median(warm):.3f} s; warm with the agent streamed (a host without it) "
          f"{statistics.median(warm_src):.3f} s")


def bench_routes(lab, inventory: Path, rounds: int = 5) -> None:
    """16 hosts direct and through a bastion, cold (no connection to reuse) and warm (ControlPersist)."""
    import shutil

    jump = jump_inventory(lab, inventory)
    try:
        for label, inv in (("direct", inventory), ("through a bastion", jump)):
            cold = [waops("diagnose", "-i", str(inv), "--all", "--output", "json", env=fresh_control_dir())[0]
                    for _ in range(3)]
            env = fresh_control_dir()
            warm = [waops("diagnose", "-i", str(inv), "--all", "--output", "json", env=env)[0]
                    for _ in range(rounds + 1)][1:]
            _, p = waops("diagnose", "-i", str(inv), "--all", "--output", "json", env=env)
            rows = json.loads(p.stdout)["results"]
            bad = [r["host"] for r in rows if not r["reachable"]]
            print(f"{len(lab.hosts())} hosts {label}: cold median {statistics.median(cold):.2f} s (runs "
                  f"{', '.join(f'{t:.2f}' for t in cold)}), warm median {statistics.median(warm):.2f} s, min "
                  f"{min(warm):.2f} s; unreachable: {bad or 'none'}")
            close_masters()
    finally:
        shutil.rmtree(jump, ignore_errors=True)


def bench_many(inventory: Path, rounds: int = 5) -> None:
    times, rows = [], []
    for _ in range(rounds):
        took, p = waops("diagnose", "-i", str(inventory), "--all", "--output", "json")
        times.append(took)
        rows = json.loads(p.stdout)["results"]
    causes: dict[str, int] = {}
    for r in rows:
        causes[r["cause"]] = causes.get(r["cause"], 0) + 1
    for r in rows:
        if not r["reachable"]:
            print(f"  {r['host']}: {r['error']}")
    print(
        f"{len(rows)} hosts in one call (waops diagnose --all, whole command), median of {rounds}: "
        f"{statistics.median(times):.2f} s, min {min(times):.2f} s (target < 2.5 s); causes {causes}"
    )
    print(f"  runs: {', '.join(f'{t:.2f}' for t in times)}")
    profile_many(inventory)


def import_profile(inventory: Path, host: str, top: int = 8) -> None:
    """Where one `waops diagnose HOST`'s start-up goes: python -X importtime, top-level modules."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "from waops.cli import main; main()", "diagnose",
                        "-i", str(inventory), host, "--output", "json"], capture_output=True, text=True, check=False)
    rows = []
    for line in p.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and not parts[2].startswith("  "):
            try:
                rows.append((int(parts[1]), parts[2].strip()))
            except ValueError:
                continue
    rows.sort(reverse=True)
    total = sum(us for us, _ in rows)
    print(f"  imports of one diagnose: {total / 1000:.0f} ms in all; heaviest top-level: "
          + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:top]))
    print(f"  ansible imported: {'yes' if any(n == 'ansible' for _, n in rows) else 'no'}")


BOTS_PER_HOST = 8


def bench_many_bots(lab, inventory: Path, rounds: int = 5) -> None:
    """16 hosts x 8 bots: each host's agent gets 7 more bot configs (copies of shop's, same process and
    files, other names), so that facts, transfer and classification are those of 8 bots per host."""
    extra = [f"shop{k}" for k in range(2, BOTS_PER_HOST + 1)]
    add = " && ".join(
        f"sed 's/\"name\": *\"shop\"/\"name\": \"{b}\"/' /etc/waops/bots/shop.json > /etc/waops/bots/{b}.json"
        for b in extra)
    remove = "rm -f " + " ".join(f"/etc/waops/bots/{b}.json" for b in extra)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda h: lab.ssh(h, add, check=True), lab.hosts()))
    try:
        times, rows, failed = [], [], 0
        for _ in range(rounds):
            start = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", "from waops.cli import main; main()", "diagnose", "-i",
                                str(inventory), "--all", "--output", "json"], capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            rows = json.loads(p.stdout)["results"] if p.stdout.strip() else []
            failed += p.returncode not in (0, 1)
        bots = [r for r in rows if r.get("bot")]
        med = statistics.median(times)
        print(f"{len(lab.hosts())} hosts x {BOTS_PER_HOST} bots ({len(bots)} bot rows) in one call, median of "
              f"{rounds}: {med:.2f} s, min {min(times):.2f} s "
              f"({goal('128 bots', f'{med:.2f} s (min {min(times):.2f} s)', '< 2 s', med < 2)}); "
              f"runs with an unreachable host: {failed}")
        print(f"  runs: {', '.join(f'{t:.2f}' for t in times)}")
        profile_many(inventory)
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda h: lab.ssh(h, remove), lab.hosts()))


def ssh_floor(lab, rounds: int = 3) -> None:
    """Logging in to every host at once and running `true` (OpenSSH): what any SSH-based check costs
    here at least, since all the lab's hosts share this machine's cores with the controller."""
    from concurrent.futures import ThreadPoolExecutor

    from waops_lab.lab.container import ssh_options

    opts = ssh_options(lab.image.key, lab.known_hosts)
    hosts = lab.hosts()

    def one(h) -> int:  # type: ignore[no-untyped-def]
        return subprocess.run(["ssh", *opts, f"root@{h.ip}", "true"], capture_output=True).returncode

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(one, hosts))
        times.append(time.perf_counter() - start)
    print(
        f"  floor: `ssh HOST true` to all {len(hosts)} hosts at once (OpenSSH), median of {rounds}: "
        f"{statistics.median(times):.2f} s"
    )


def profile_many(inventory: Path) -> None:
    """Where the time of one --all call goes, in process: per-host round trips and classification."""
    from waops import config, probe
    from waops import inventory as inv
    from waops.diagnose import diagnose

    s = config.load({"inventory": str(inventory)})
    hosts = inv.load(str(inventory), ["all"])
    start = time.perf_counter()
    reports = probe.probe_hosts(hosts, s)
    wall = time.perf_counter() - start
    facts = [b.facts for r in reports for b in r.bots if b.facts]
    t = time.perf_counter()
    for f in facts:
        diagnose(f, s)
    classify = (time.perf_counter() - t) / max(1, len(facts))
    per_host = sorted(r.elapsed_s for r in reports)
    by_manager: dict[str, list[float]] = {}
    for r in reports:
        manager = next((b.facts.process.manager for b in r.bots if b.facts and b.facts.process), "?")
        by_manager.setdefault(str(manager), []).append(r.elapsed_s)
    split = ", ".join(f"{m} hosts median {statistics.median(v):.2f} s" for m, v in sorted(by_manager.items()))
    start = time.perf_counter()
    inv.load(str(inventory), ["all"])
    inv_s = time.perf_counter() - start
    print(
        f"  in process: probe_hosts {wall:.2f} s (concurrency {s.concurrency}); per-host round trip "
        f"median {statistics.median(per_host):.2f} s, max {per_host[-1]:.2f} s ({split}); classification "
        f"{classify * 1000:.1f} ms per bot; inventory load ({inv.last_read.reader} reader) {inv_s * 1000:.0f} ms"
    )


def compile_bytecode() -> None:
    """Every figure is that of an installed waops: pip writes each module's bytecode at install time. A
    checkout under PYTHONDONTWRITEBYTECODE=1 (set on this machine) would compile every module from source
    on every run instead, which no operator pays; compileall writes the bytecode once, in __pycache__."""
    import compileall
    import importlib.util

    dirs = [Path(spec.origin).parent for name in ("waops", "waops_host", "waops_lab")
            if (spec := importlib.util.find_spec(name)) is not None and spec.origin]
    start = time.perf_counter()
    ok = all(compileall.compile_dir(str(d), quiet=1) for d in dirs)
    print(f"bytecode of {', '.join(d.name for d in dirs)} written first, as pip install does "
          f"({time.perf_counter() - start:.1f} s, {'ok' if ok else 'FAILED'}; PYTHONDONTWRITEBYTECODE="
          f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", action="store_true", help="also the live benchmarks on 16 lab hosts (root)")
    ap.add_argument("--only-lab", action="store_true", help="only the live benchmarks")
    ap.add_argument("--keep", action="store_true", help="leave lab bench16 up for another run")
    ap.add_argument("--from-commit", metavar="REV", help="provision with site.yml as of this commit (e.g. HEAD)")
    ap.add_argument("--update", action="store_true", help="on a kept lab, run site.yml again first")
    args = ap.parse_args()
    compile_bytecode()
    if not args.only_lab:
        bench_classify()
        bench_logs()
        bench_streamed()
    if not (args.lab or args.only_lab):
        return
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores, shared)")
    lab, inventory = provisioned_lab(args.from_commit, args.update)
    try:
        wait_linked(lab, skip=(lab.hosts()[0].name,))  # bench16-1 gets logged_out next
        bench_one_host(lab, inventory)
        bench_many(inventory)
        bench_routes(lab, inventory)
        bench_many_bots(lab, inventory)
        ssh_floor(lab)
    finally:
        close_masters()
        if not args.keep:
            lab.down(log=lambda _m: None)
    print_goals()


if __name__ == "__main__":
    main()
