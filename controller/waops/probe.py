"""Diagnose live hosts: probe each (in parallel, bounded), classify each bot, keep the facts.

The transport is a parameter (`transport_factory(host, deadline_s)`), so tests and `recover` can pass
their own; the default is strict SSH (waops.transport).
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waops.config import Settings
from waops.errors import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE, UnreachableError, WaopsError
from waops.facts import collect
from waops.inventory import Host
from waops.model import BotFacts
from waops.transport import Transport

if TYPE_CHECKING:
    from waops.diagnose import Diagnosis

TransportFactory = Callable[[Host, float], Transport]


@dataclass
class BotReport:
    bot: str
    diagnosis: Diagnosis
    facts: BotFacts | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"bot": self.bot, **self.diagnosis.to_dict(), "facts": self.facts.to_dict() if self.facts else None}


@dataclass
class HostReport:
    host: str
    reachable: bool = True
    error: str | None = None
    fingerprint: str | None = None  # offered host key when it was refused
    elapsed_s: float = 0.0
    bots: list[BotReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "reachable": self.reachable, "error": self.error,
                "fingerprint": self.fingerprint, "elapsed_s": round(self.elapsed_s, 3),
                "bots": [b.to_dict() for b in self.bots]}


def ssh_factory(host: Host, timeout: float) -> Transport:
    from waops.transport import for_host

    return for_host(host, timeout)


def probe_host(host: Host, settings: Settings, factory: TransportFactory = ssh_factory,
               bots: Sequence[str] = ()) -> HostReport:
    start = time.monotonic()
    report = HostReport(host.name)
    transport: Transport | None = None
    try:
        transport = factory(host, settings.timeout)
        doc = collect(transport, settings.timeout, become=host.become and host.user not in (None, "root"))
    except UnreachableError as exc:
        report.reachable, report.error = False, str(exc)
        report.fingerprint = getattr(exc, "fingerprint", None)
    except WaopsError as exc:  # reached, but no facts: the host is not provisioned or the agent failed
        from waops.diagnose import Diagnosis

        report.error = str(exc)
        report.bots = [BotReport(b.name, Diagnosis("unknown", None, [str(exc)], 0.1))
                       for b in host.bots if not bots or b.name in bots]
    else:
        # imported only now: while this host answered, probe_hosts' thread imported the classifier
        from waops.diagnose import Diagnosis, diagnose

        for entry in doc.bots:  # typed: facts.parse checked the shape and that every bot has a name
            name = entry.bot or ""
            if bots and name not in bots:
                continue
            try:
                d = diagnose(entry, settings)
            except Exception as exc:  # a rule tripping on this host's facts must not stop the others
                report.error = f"{host.name}: cannot diagnose {name}: {type(exc).__name__}: {exc}"
                d = Diagnosis("unknown", None, [report.error], 0.0)
            report.bots.append(BotReport(name, d, entry))
        missing = [b.name for b in host.bots if b.name not in {r.bot for r in report.bots}
                   and (not bots or b.name in bots)]
        for name in missing:  # the inventory says the bot is here, the agent does not know it
            report.bots.append(BotReport(name, Diagnosis(
                "process_down", None, ["the agent has no config for this bot (not provisioned?)"], 0.5,
                rule="agent_config_missing")))
    finally:
        if transport is not None:
            transport.close()
        report.elapsed_s = time.monotonic() - start
    return report


def probe_hosts(hosts: Sequence[Host], settings: Settings, factory: TransportFactory = ssh_factory,
                bots: Sequence[str] = (), on_done: Callable[[HostReport], None] | None = None,
                warm: Sequence[str] = ()) -> list[HostReport]:
    """Every host, at most `settings.concurrency` at once; results in inventory order.

    Workers are daemon threads and the caller waits in short slices: Ctrl-C during a hung probe
    returns at once instead of after the probe's deadline (a thread pool would join its workers, at
    the `with` and again at exit). While the hosts answer, this thread imports the `warm` modules
    (and the classifier), so that their import time hides behind the network wait."""
    if factory is ssh_factory:
        warn_divergences(hosts)
    results: list[HostReport | None] = [None] * len(hosts)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for k in range(len(hosts)):
        todo.put(k)
    finished = threading.Semaphore(0)

    def worker() -> None:
        while True:
            try:
                k = todo.get_nowait()
            except queue.Empty:
                return
            try:
                r = probe_host(hosts[k], settings, factory, bots)
            except Exception as exc:  # one host's surprise must not blind the rest of the fleet
                r = HostReport(hosts[k].name, reachable=False,
                               error=f"{hosts[k].name}: probe failed: {type(exc).__name__}: {exc}")
            results[k] = r
            if on_done is not None:
                with _done_lock:
                    on_done(r)
            finished.release()

    for n in range(max(1, min(settings.concurrency, len(hosts)))):
        threading.Thread(target=worker, name=f"waops-probe-{n}", daemon=True).start()
    for module in ("waops.diagnose", *warm):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    for _ in hosts:
        while not finished.acquire(timeout=0.2):
            pass
    return [r for r in results if r is not None]


_done_lock = threading.Lock()


def warn_divergences(hosts: Sequence[Host]) -> None:
    """Say, before connecting, where the probe will not take the route Ansible takes (never silently)."""
    import sys

    from waops.openssh import divergences

    for host in hosts:
        for why in divergences(host):
            print(f"waops: warning: {host.name}: {why}", file=sys.stderr)


def exit_code(reports: Sequence[HostReport]) -> int:
    """3 when a host was unreachable, else 1 when a bot is not healthy (or nothing was found), else 0."""
    if any(not r.reachable for r in reports):
        return EXIT_UNREACHABLE
    bots = [b for r in reports for b in r.bots]
    if not bots or any(not b.diagnosis.healthy for b in bots):
        return EXIT_PROBLEM
    return EXIT_OK
