"""`waops demo`: the whole job on the sandbox, for a newcomer on a fresh machine.

lab up (one host) -> provision with playbooks/site.yml -> wait for the bot to link -> the simulator
logs the device out (a session expiry, 401) -> diagnose -> recover --yes (the simulated phone scans the
new QR) -> MTTR report -> lab down (unless keep). Every stage is timed; the report says where time went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops.errors import WaopsError


class DemoError(WaopsError):
    pass


@dataclass
class DemoResult:
    lab: str
    host: str = ""
    bot: str = ""
    stages: list[tuple[str, float]] = field(default_factory=list)
    diagnosis: dict[str, Any] | None = None
    recover: Any = None  # waops.recover.RecoverResult
    report: list[Any] = field(default_factory=list)  # waops.mttr.CauseStats
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "host": self.host, "bot": self.bot,
                "stages": [{"stage": n, "seconds": round(s, 1)} for n, s in self.stages],
                "diagnosis": self.diagnosis, "recover": self.recover.to_dict() if self.recover else None,
                "mttr": [r.to_dict() for r in self.report], "kept": self.kept}  # fmt: skip


class Stages:
    def __init__(self, result: DemoResult, say: Callable[[str], None]) -> None:
        self.result = result
        self.say = say

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.say(f"[bold cyan]==>[/] {name}")
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            secs = time.monotonic() - t0
            self.result.stages.append((name, secs))
            self.say(f"    [dim]{name}: {secs:.1f}s[/]")


def run_demo(
    *,
    name: str = "demo",
    manager: str = "pm2",
    keep: bool = False,
    store: str | Path | None = None,
    ui: Any = None,
    say: Callable[[str], None] = print,
    on_progress: Callable[[Any], None] | None = None,
    link_timeout_s: float = 180,
) -> DemoResult:
    from waops.config import Settings
    from waops.execute import run_playbook
    from waops.incidents import connect
    from waops.mttr import report
    from waops.recover import RecoverOptions, Recovery, default_deps, host_probe, targets
    from waops.verify import wait_verified
    from waops_lab.lab import Lab, LabSettings
    from waops_lab.lab.faults import inject

    lab = Lab(LabSettings.from_env(name))
    result = DemoResult(lab=name, kept=keep)
    st = Stages(result, say)
    settings = Settings(timeout=60.0)
    try:
        inv = st.run("lab up: one Debian host (systemd-nspawn), the WhatsApp simulator, PostgreSQL",
                     lambda: lab.up(1, (manager,), log=lambda m: say(f"    [dim]{m}[/]")))

        def provision() -> None:
            run = run_playbook("site.yml", inventory=inv, timeout_s=1800, on_progress=on_progress)
            if not run.ok:
                why = "; ".join(f"{f.task}: {f.message}" for f in run.failures[:3]) or run.status
                raise DemoError(f"provisioning failed: {why}")

        st.run("provision with playbooks/site.yml (node, the bot, its service, the host agent)", provision)
        host, target = targets(inv, ["all"], None)[0]
        result.host, result.bot = target.host, target.bot
        probe = host_probe(host, target.bot, settings)

        def linked() -> None:
            v = wait_verified(probe, timeout_s=link_timeout_s, host=target.host, interval_s=2, settle_s=1)
            if not v.ok:
                raise DemoError(f"the bot did not link: {v.detail}")

        st.run("wait for the bot to link (the simulated phone scans its first QR code)", linked)
        st.run("break it: WhatsApp logs the device out (session expired, 401)",
               lambda: say("    " + inject(lab, target.host, "logged_out", target.bot)))

        def diagnose() -> None:
            # Right after the 401 the bot may be between exit and restart (health "stopped"): wait until
            # the facts settle on the cause, as the scheduled health check would see it.
            deadline = time.monotonic() + 90
            while True:
                state = probe()
                if state.diagnosis.cause == "logged_out" or time.monotonic() > deadline:
                    break
                time.sleep(2)
            d = state.diagnosis
            result.diagnosis = {"cause": d.cause, "code": d.code, "evidence": list(d.evidence)[:4]}
            say(f"    diagnosis: [bold]{d.cause}[/] (code {d.code}), confidence {d.confidence:.2f}")

        st.run("diagnose (waops diagnose)", diagnose)

        def recover() -> None:
            with connect(store) as s:
                deps = default_deps(host, target, inv, s, settings)
                result.recover = Recovery(target, RecoverOptions(yes=True, link_timeout_s=int(link_timeout_s)),
                                          deps, ui).run()
                result.report = report(s.list(limit=None))
            if result.recover.outcome not in ("resolved", "rolled_back"):
                raise DemoError(f"recover ended {result.recover.outcome}: {result.recover.why}")

        st.run("recover --yes (backup, reset, new QR, the phone scans, verify with a test message)", recover)
        return result
    finally:
        if not keep:
            st.run("lab down", lambda: lab.down(log=lambda _m: None))
        else:
            say(f"    lab kept: `waops lab status --name {name}`, `waops lab down --name {name}`")
