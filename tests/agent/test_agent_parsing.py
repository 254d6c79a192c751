"""The host agent's parsing in process: shipped log lines, key types, pm2's and systemd's answers, the
journal. The modules are imported as the package they are (roles/waops_host/files is on the path)."""

from __future__ import annotations

import json
import time

import pytest

from waops.diagnose import records_from_logs
from waops_host import facts, keys, logtail, process


@pytest.mark.parametrize(("line", "time_", "code"), [
    ('{"level":30,"time":"2025-10-17T21:16:26.710Z","msg":"connected to WA"}', "2025-10-17T21:16:26.710Z", None),
    ('{"level":30,"time":1646809863449,"msg":"connection closed","err":{"output":{"statusCode":440}}}',
     "2022-03-09T07:11:03.449Z", 440),
    ('{"level":50,"msg":"stream errored out","node":"Stream Errored (conflict) replaced"}', None, 440),
    ('{"level":50,"msg":"stream errored out","node":"Stream Errored (conflict) device_removed"}', None, 401),
    ("Stream Errored (restart required)", None, 515),
    ('{"level":30,"msg":"connection errored","node":"<failure reason=\\"403\\"/>"}', None, 403),
    ("Error: Connection Failure { data: { reason: '405' }, output: { statusCode: 405 } }", None, 405),
    ("2025-10-27T09:33:07: Failed to decrypt message with any known session...", "2025-10-27T09:33:07", None),
])
def test_shipped_lines_are_read_by_the_controllers_reader(line: str, time_: str | None, code: int | None) -> None:
    """One record reader: the agent ships lines as they are, waops.logparse reads them."""
    assert not any(hasattr(m, "parse_line") or hasattr(m, "scan_lines") for m in (logtail, facts))
    (rec,) = records_from_logs(logtail.ship_lines([("out", line)]))
    assert (rec.time, rec.code) == (time_, code)


def test_shipping_is_bounded_and_keeps_the_newest_lines() -> None:
    lines = [f"line {i:05d} " + "x" * 90 for i in range(5000)]
    shipped = logtail.ship_lines([("out", x) for x in lines])
    out = shipped["streams"]["out"]
    assert out[-1] == lines[-1] and out == lines[-len(out):]
    assert sum(len(x) + 1 for x in out) <= logtail.LOG_SHIP_BYTES < sum(len(x) + 1 for x in lines[-len(out) - 1:])
    assert shipped["lines_read"] == 5000


def test_key_type() -> None:
    kt = keys.key_type
    assert kt("creds.json") == "creds"
    assert kt("pre-key-12.json") == "pre-key"
    assert kt("sender-key-memory-120363@g.us.json") == "sender-key-memory"
    assert kt("sender-key-120363@g.us--1555@s.whatsapp.net.json") == "sender-key"
    assert kt("app-state-sync-version-critical_block.json") == "app-state-sync-version"
    assert kt("app-state-sync-key-AAAAAEHa.json") == "app-state-sync-key"
    assert kt("session-15550100002.0.json") == "session"
    assert kt("lid-mapping-1555_reverse.json") == "lid-mapping"
    assert kt("notes.txt") == "other"


def test_pm2_jlist_parsing() -> None:
    apps = [{"name": "other", "pid": 1, "pm2_env": {"status": "online"}}]
    apps += [{"name": "shop", "pid": 4242, "pm_id": i, "pm2_env": {
        "status": "online", "restart_time": 3, "unstable_restarts": 1, "pm_uptime": (time.time() - 120) * 1000,
        "exit_code": 0, "pm_out_log_path": "/x/shop-out-0.log", "pm_err_log_path": "/x/shop-error-0.log"}}
        for i in range(2)]
    proc, logs = process.pm2_status({"manager": "pm2"}, {"out": "a", "err": "b"}, apps, "shop")
    assert proc["status"] == "online" and proc["restarts"] == 3 and proc["pid"] == 4242
    assert 110 <= proc["uptime_s"] <= 130 and proc["pm2_instances"] == 2  # cluster mode: a duplicate
    assert logs == {"out": "/x/shop-out-0.log", "err": "/x/shop-error-0.log"}
    proc, _ = process.pm2_status({"status": "missing"}, {}, apps, "nope")
    assert proc["status"] == "missing"


def test_systemctl_show_parsing() -> None:
    show = ("ActiveState=active\nSubState=running\nNRestarts=4\nExecMainPID=777\nExecMainStatus=0\n"
            "LoadState=loaded\nExecMainStartTimestampMonotonic=1000000\n")
    p = process.systemd_status({"status": "missing"}, show)
    assert (p["status"], p["sub_state"], p["restarts"], p["pid"], p["exit_code"]) == ("active", "running", 4, 777, 0)
    assert p["uptime_s"] >= 0
    assert process.systemd_status({"status": "missing"}, "LoadState=not-found\n")["status"] == "missing"
    failed = process.systemd_status({}, "ActiveState=failed\nExecMainPID=0\nExecMainStatus=1\nNRestarts=16\n")
    assert failed["status"] == "failed" and failed["pid"] is None and failed["exit_code"] == 1


def test_journald_entries() -> None:
    entries = [
        json.dumps({"MESSAGE": '{"level":30,"time":1763796000000,"msg":"connection closed","err":'
                               '{"output":{"statusCode":428}}}', "PRIORITY": "6",
                    "__REALTIME_TIMESTAMP": "1763796000100000"}).encode(),
        json.dumps({"MESSAGE": list(b"Bad MAC \xff\xfe garbage"), "PRIORITY": "3",
                    "__REALTIME_TIMESTAMP": "1763796001000000"}).encode(),
        b"not json at all",
        json.dumps({"MESSAGE": "plain info", "__REALTIME_TIMESTAMP": "bogus"}).encode(),
    ]
    items = logtail.journal_items(entries)
    assert [s for s, _ in items] == ["out", "err", "out"]
    recs = records_from_logs(logtail.ship_lines(items))
    (closed,) = [r for r in recs if r.code == 428]
    assert closed.time == "2025-11-22T07:20:00.000Z"
    (mac,) = [r for r in recs if "Bad MAC" in r.text]
    assert mac.time == "2025-11-22T07:20:01.000Z" and mac.stream == "err"


@pytest.mark.parametrize(("entry", "units"), [
    ({"_SYSTEMD_UNIT": "shop.service", "_PID": "812", "_UID": "999"}, {"shop.service"}),
    # PID 1 about a unit ("Main process exited"), from init.scope
    ({"_SYSTEMD_UNIT": "init.scope", "_PID": "1", "_UID": "0", "UNIT": "shop.service"}, {"init.scope", "shop.service"}),
    ({"_SYSTEMD_UNIT": "x.service", "_PID": "7", "_UID": "999", "UNIT": "shop.service"}, {"x.service"}),  # not PID 1
    ({"_UID": "0", "OBJECT_SYSTEMD_UNIT": "shop.service"}, {"shop.service"}),
    ({"_UID": "999", "OBJECT_SYSTEMD_UNIT": "shop.service"}, set()),  # only root speaks for a unit
    ({"_UID": "0", "MESSAGE_ID": logtail.COREDUMP_MESSAGE_ID, "COREDUMP_UNIT": "shop.service"}, {"shop.service"}),
    ({"_UID": "0", "COREDUMP_UNIT": "shop.service"}, set()),
    ({"_SYSTEMD_UNIT": ["a.service", "b.service"]}, {"a.service", "b.service"}),
])
def test_a_journal_entry_goes_to_the_units_journalctl_u_shows_it_for(entry: dict, units: set[str]) -> None:
    """One journalctl run for all of a host's units is split by journalctl's own matches for `-u UNIT`."""
    assert logtail.units_of(entry) == units

