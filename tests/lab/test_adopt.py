"""Adopting a bot someone already runs, on a lab host built BY HAND the way the runbook's server is.

The host gets, without waops: pm2 from npm, a git working copy of a Baileys bot in /root (the sandbox bot,
talking to the simulator) run by root as the pm2 app `baileys-whatsapp-service` with `pm2 save` and
`pm2 startup`, a hand-written PostgreSQL auth state (`auth-state-pg.js`, table
baileys_auth(key text primary key, value jsonb), one bot per table) reached with sslmode=require on the
lab's PostgreSQL, and a dot folder /root/.baileys_auth_info from the days it ran on useMultiFileAuthState.
Another bot's rows sit in another table of the same database.

Then: `waops adopt` proposes the inventory entry, the test pastes it, provisioning changes nothing of the
bot (checksums of its code, dump, folder and rows; its process keeps its pid; a second run reports no
change), the backup of folder and rows verifies, and faults are recovered with one `waops recover --yes`
each; the other bot's table stays byte for byte as it was. Last, `waops manage` moves the bot into the
managed layout (own user, release, systemd unit): first with a version that cannot start, which ends
rolled back to the adopted layout, open as the same device; then for real, keeping the device (no QR),
the pm2 app gone from pm2's dump and the inventory entry rewritten from adopted to managed.

Set WAOPS_TEST_LAB=<name> to reuse a lab that is up and built (development); it is left running.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.lab.test_recover import RcLab, _repo, _waops, auto_link_off, incident

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

LAB_NAME = "adopt"
APP = "baileys-whatsapp-service"
WORKDIR = f"/root/{APP}"
FOLDER = "/root/.baileys_auth_info"
PM2_VERSION = "7.0.4"

AUTH_STATE_PG = r"""'use strict'
// Baileys auth state in PostgreSQL, one bot per table: baileys_auth(key text primary key, value jsonb).
const { BufferJSON, initAuthCreds } = require('baileys')

async function usePgAuthState (pool, table = 'baileys_auth') {
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (key text PRIMARY KEY, value jsonb)`)
  const read = async (key) => {
    const { rows } = await pool.query(`SELECT value FROM ${table} WHERE key = $1`, [key])
    return rows[0] ? JSON.parse(JSON.stringify(rows[0].value), BufferJSON.reviver) : null
  }
  const write = (key, value) => pool.query(
    `INSERT INTO ${table} (key, value) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
    [key, JSON.stringify(value, BufferJSON.replacer)])
  const remove = (key) => pool.query(`DELETE FROM ${table} WHERE key = $1`, [key])
  const creds = (await read('creds')) || initAuthCreds()
  return {
    state: {
      creds,
      keys: {
        get: async (type, ids) => {
          const data = {}
          await Promise.all(ids.map(async (id) => { data[id] = await read(`${type}-${id}`) }))
          return data
        },
        set: async (data) => {
          const tasks = []
          for (const category in data) {
            for (const id in data[category]) {
              const value = data[category][id]
              tasks.push(value ? write(`${category}-${id}`, value) : remove(`${category}-${id}`))
            }
          }
          await Promise.all(tasks)
        }
      }
    },
    saveCreds: () => write('creds', creds)
  }
}

module.exports = { usePgAuthState }
"""

LOAD_AUTH = r"""let pool = null
async function loadAuthState () {
  const url = process.env.DATABASE_URL
  if (url) {
    const { Pool } = require('pg')
    const { usePgAuthState } = require('./auth-state-pg')
    pool = pool || new Pool({ connectionString: url.replace(/[?&]sslmode=[^&]*/, ''),
      ssl: /sslmode=require/.test(url) ? { rejectUnauthorized: false } : false, max: 4 })
    return usePgAuthState(pool, 'baileys_auth')
  }
  return useMultiFileAuthState('/root/.baileys_auth_info')
}

"""


def _bot_source() -> str:
    """The sandbox bot's index.js with its store switch replaced by the hand-written one."""
    src = (_repo() / "lab/waops_lab/sandbox/bot/index.js").read_text()
    start = src.index("let pgPool = null")
    end = src.index("function answer")
    return src[:start] + LOAD_AUTH + src[end:]


def _dsn(lab: Any) -> str:
    return f"postgresql://waops:{lab.postgres.password}@{lab.postgres.listen}:{lab.postgres.port}/waops?sslmode=require"


def _env(lab: Any, phone: str, with_db: bool = True) -> str:
    env = {"WAOPS_BOT": APP, "WAOPS_PHONE": phone, "WAOPS_SIM_URL": lab.sim_url, "WAOPS_RECONNECT_DELAY_MS": "1000"}
    if with_db:
        env["DATABASE_URL"] = _dsn(lab)
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def _sh(lab: Any, host: Any, script: str, timeout: float = 600, stdin: bytes | None = None) -> str:
    proc = subprocess.run(lab.ssh_argv(host, "bash -se" if stdin is None else script),
                          input=script.encode() if stdin is None else stdin, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, (script[:300], proc.stdout.decode()[-2000:], proc.stderr.decode()[-3000:])
    return proc.stdout.decode()


def build_runbook_host(lab: Any, host: Any, phone: str) -> None:
    """The server as people run it, made by hand (no waops anywhere)."""
    _sh(lab, host, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git "
                   f"postgresql-client >/dev/null && npm install -g --no-audit --no-fund pm2@{PM2_VERSION} >/dev/null")
    bot_dir = _repo() / "lab/waops_lab/sandbox/bot"
    tar = subprocess.run(["tar", "-C", str(bot_dir), "--exclude=./node_modules", "-cz", "."], capture_output=True,
                         check=True).stdout
    _sh(lab, host, f"mkdir -p {WORKDIR} && tar -xz -C {WORKDIR}", stdin=tar)
    files = {f"{WORKDIR}/auth-state-pg.js": AUTH_STATE_PG, f"{WORKDIR}/index.js": _bot_source()}
    for path, text in files.items():
        _sh(lab, host, f"cat > {shlex.quote(path)}", stdin=text.encode())
    _sh(lab, host, f"""
cd {WORKDIR}
rm -f pg-auth.js sqlite-auth.js
npm ci --omit=dev --no-audit --no-fund >/dev/null 2>&1
git init -q && git config user.email ops@example.com && git config user.name ops
printf 'node_modules/\\n' > .gitignore && git add -A && git commit -qm 'whatsapp service'
""", timeout=900)
    # First life on the folder store (the dot folder), then moved to PostgreSQL by hand: a new link.
    _sh(lab, host, f"cd {WORKDIR} && {_env(lab, phone, with_db=False)} pm2 start index.js --name {APP} >/dev/null")
    _wait(lambda: '"me":' in _sh(lab, host, f"tr -d ' ' < {FOLDER}/creds.json 2>/dev/null || true"), 120,
          "the link on the folder store")
    _sh(lab, host, f"pm2 delete {APP} >/dev/null")
    _sh(lab, host, f"cd {WORKDIR} && {_env(lab, phone)} pm2 start index.js --name {APP} >/dev/null "
                   "&& pm2 save >/dev/null && pm2 startup systemd -u root --hp /root >/dev/null")
    _wait(lambda: _psql(lab, host, "SELECT count(*) FROM baileys_auth WHERE key = 'creds' AND value ? 'me'")
          .strip() == "1" if _psql(lab, host, "SELECT to_regclass('baileys_auth') IS NOT NULL").strip() == "t"
          else False, 120, "the link on PostgreSQL")
    # Another bot's session in its own table of the same database.
    _psql(lab, host, "CREATE TABLE crm_auth (key text PRIMARY KEY, value jsonb); INSERT INTO crm_auth "
                     "SELECT 'pre-key-' || i, jsonb_build_object('id', i) FROM generate_series(1, 25) i; "
                     "INSERT INTO crm_auth VALUES ('creds', '{\"me\": {\"id\": \"15550100999:1@s.whatsapp.net\"}}'), "
                     "('app-state-sync-key-AAA', '{\"k\": 1}')")


def _psql(lab: Any, host: Any, sql: str) -> str:
    pw = lab.postgres.password
    return _sh(lab, host, f"PGPASSWORD={shlex.quote(pw)} PGSSLMODE=require psql -X -qAt -h {lab.postgres.listen} "
                          f"-p {lab.postgres.port} -U waops -d waops -v ON_ERROR_STOP=1", stdin=sql.encode())


def _wait(ok: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def snapshot(r: RcLab) -> dict[str, str]:
    """Everything of the bot that provisioning must leave alone."""
    h = r.host(1)
    files = _sh(r.lab, h, f"cd / && find {WORKDIR} {FOLDER} /root/.pm2/dump.pm2 /etc/systemd/system/pm2-root.service "
                          "-type f -not -path '*/node_modules/.cache/*' -print0 | sort -z | xargs -0 sha256sum "
                          "| sha256sum")
    return {
        "files": files.split()[0],
        "rows": _psql(r.lab, h, "SELECT count(*) || ':' || md5(string_agg(key || value::text, ',' ORDER BY key)) "
                                "FROM baileys_auth").strip(),
        "pid": _sh(r.lab, h, f"pm2 pid {APP}").strip(),
        "head": _sh(r.lab, h, f"git -C {WORKDIR} rev-parse HEAD").strip(),
    }


def crm_rows(r: RcLab) -> str:
    return _psql(r.lab, r.host(1), "SELECT count(*) || ':' || md5(string_agg(key || value::text, ',' ORDER BY key)) "
                                   "FROM crm_auth").strip()


@pytest.fixture(scope="module")
def adlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcLab]:
    from tests.conftest import _lab, lab_available

    why = lab_available()
    if why:
        pytest.skip(why)
    reuse = os.environ.get("WAOPS_TEST_LAB")
    lab = _lab(reuse or LAB_NAME)
    store = tmp_path_factory.mktemp("ad") / "incidents.db"
    try:
        if not reuse:
            lab.up(1, ("pm2",), log=lambda _m: None)
            h = lab.hosts()[0]
            build_runbook_host(lab, h, h.bots[0]["phone"])
            # Until it is adopted the host has no bot in the inventory: nothing waops would deploy.
            host_vars = lab.inventory_dir / "host_vars"
            host_vars.mkdir(exist_ok=True)
            (host_vars / f"{h.name}.yml").write_text(json.dumps({"waops_bots": []}))
        yield RcLab(lab, lab.inventory_dir, store)
    finally:
        if not reuse:
            lab.down(log=lambda _m: None)


def _run(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=_repo(),
                          env=dict(os.environ, NO_COLOR="1", **(env or {})))


def _provision(r: RcLab) -> str:
    proc = _run("ansible-playbook", "-i", str(r.inventory), "playbooks/site.yml", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def _facts(r: RcLab) -> dict[str, Any]:
    return json.loads(r.ssh(1, f"waops-host facts --json --bot {APP}"))["bots"][0]


def test_1_adopt_proposes_the_entry_and_provision_changes_nothing(adlab: RcLab) -> None:
    r = adlab
    h = r.host(1)
    proc = _run(_waops(), "adopt", "-i", str(r.inventory), h.name, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert r.lab.postgres.password not in proc.stdout + proc.stderr
    doc = yaml.safe_load(proc.stdout)
    (entry,) = doc["waops_bots"]
    assert entry["service"] == {"manager": "pm2", "app": APP, "pm2_home": "/root/.pm2", "user": "root"}, entry
    assert entry["workdir"] == WORKDIR and entry["auth"]["folder"] == FOLDER, entry
    pg = entry["auth"]["postgres"]
    assert (pg["table"], pg["key_column"], pg["value_column"], pg["rows"]) == ("baileys_auth", "key", "value", "table")
    var = re.fullmatch(r"\{\{ (vault_\w+) \}\}", pg["dsn"])
    assert var and f"# vault: {var.group(1)}: the value of DATABASE_URL" in proc.stdout, proc.stdout
    assert entry["logs"]["err"] == f"/root/.pm2/logs/{APP}-error.log"
    assert "crm_auth" in proc.stdout  # named as another auth table, not taken

    # Pasted as printed; the secret goes where the comment says (plain here: a lab inventory).
    host_vars = r.inventory / "host_vars" / f"{h.name}.yml"
    entry["phone"] = h.bots[0]["phone"]  # the test message's number
    host_vars.write_text(yaml.safe_dump({"waops_bots": [entry], var.group(1): _dsn(r.lab)}))
    state = json.loads(r.lab.state_file.read_text())
    state["hosts"][0]["bots"] = [{"name": entry["name"], "phone": entry["phone"]}]
    r.lab.state_file.write_text(json.dumps(state, indent=2))

    before, crm = snapshot(r), crm_rows(r)
    _provision(r)
    assert snapshot(r) == before
    second = _provision(r)
    assert re.search(rf"{re.escape(h.name)}\s*:\s*ok=\d+\s+changed=0\s", second), second[-1500:]
    assert snapshot(r) == before and crm_rows(r) == crm
    cron = r.ssh(1, f"cat /etc/cron.d/waops-{APP}")
    assert f"backup --bot {APP}" in cron and f"check --bot {APP}" in cron


def test_2_facts_and_backups_of_folder_and_rows(adlab: RcLab) -> None:
    r = adlab
    f = _facts(r)
    assert f["process"]["status"] == "online" and f["process"]["instances"] == 1, f["process"]
    assert f["auth"]["store"] == "postgres" and f["auth"]["db"]["creds"]["linked"], f["auth"]
    assert f["auth"]["creds"]["linked"]  # the dot folder's own creds
    assert f["library"]["release"] == snapshot(r)["head"], f["library"]
    crm = crm_rows(r)
    b = json.loads(r.ssh(1, f"waops-host backup --bot {APP} --reason manual --json"))["results"][0]
    assert b["ok"] and b["verified"] and b["rows"] > 0 and b["entries"] > 0, b
    v = json.loads(r.ssh(1, f"waops-host verify --bot {APP} --json"))["results"][0]
    assert v["ok"], v
    assert crm_rows(r) == crm
    proc = _run(_waops(), "diagnose", "-i", str(r.inventory), r.host(1).name, "--output", "json", timeout=300)
    res = json.loads(proc.stdout)["results"][0]
    assert (proc.returncode, res["cause"]) == (0, "healthy"), res


def _recover(r: RcLab) -> tuple[int, dict[str, Any]]:
    proc = _run(_waops(), "recover", "-i", str(r.inventory), r.host(1).name, "--bot", APP, "--yes", "--output",
                "json", "--verify-timeout", "150", timeout=900, env={"WAOPS_STORE": str(r.store)})
    try:
        return proc.returncode, json.loads(proc.stdout)["results"][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-3000:]}") from None


def _wait_cause(r: RcLab, cause: str, timeout: float = 120) -> None:
    from waops.diagnose import diagnose

    last: Any = None

    def seen() -> bool:
        nonlocal last
        last = diagnose(_facts(r))
        return last.cause == cause

    try:
        _wait(seen, timeout, cause)
    except AssertionError:
        raise AssertionError(f"diagnosis stayed {last and last.cause}: {last and last.evidence}") from None


def _wait_healthy(r: RcLab, timeout: float = 180) -> None:
    from waops.diagnose import diagnose

    phone = r.host(1).bots[0]["phone"]

    def answers() -> bool:  # the simulator's test message goes through the bot and comes back
        try:
            return "is up" in r.sim.send_message(phone, "test", timeout=8)
        except Exception:
            return False

    _wait(lambda: diagnose(_facts(r)).cause == "healthy" and answers(), timeout, "healthy")


def _inject(r: RcLab, cause: str) -> None:
    h, phone = r.host(1), r.host(1).bots[0]["phone"]
    if cause == "process_down":
        r.ssh(1, f"pm2 stop {APP}", check=True)
    elif cause == "creds_lost":  # the creds row gone while the bot was down, as a hand fix gone wrong
        r.ssh(1, f"pm2 stop {APP}", check=True)
        _psql(r.lab, h, "DELETE FROM baileys_auth WHERE key = 'creds'")
        r.ssh(1, f"pm2 start {APP}", check=True)
    elif cause == "conflict":  # a second copy started by hand in the working copy
        inner = f"cd {WORKDIR} && {_env(r.lab, phone)} exec node index.js waops-lab-stray"
        r.ssh(1, f"setsid bash -c {shlex.quote(inner)} > /dev/null 2>&1 < /dev/null & sleep 1", check=True)
    elif cause == "corrupt_keys":
        r.sim.fault(phone, cause, burst=12)
    else:
        r.sim.fault(phone, cause)


# corrupt_keys last: its fallbacks (restore, reset) change the session most.
CAUSES = [("process_down", ("resolved",)), ("creds_lost", ("resolved",)), ("logged_out", ("resolved",)),
          ("conflict", ("resolved",)), ("corrupt_keys", ("resolved", "rolled_back"))]


@pytest.mark.parametrize(("cause", "allowed"), CAUSES, ids=[c for c, _ in CAUSES])
def test_3_fault_on_the_adopted_bot_is_recovered(adlab: RcLab, cause: str, allowed: tuple[str, ...]) -> None:
    r = adlab
    phone = r.host(1).bots[0]["phone"]
    crm = crm_rows(r)
    head = snapshot(r)["head"]
    try:
        with auto_link_off(r) if cause == "creds_lost" else _null():
            _inject(r, cause)
            _wait_cause(r, cause)
            rc, res = _recover(r)
        assert res["outcome"] in allowed and res["cause"] == cause, res
        assert rc == (0 if res["outcome"] == "resolved" else 1), res
        inc = incident(r, res["incident_id"])
        assert inc is not None and inc.cause == cause
    finally:
        r.sim.clear(phone)
        r.ssh(1, "pkill -f 'index.js waops-lab-[s]tray' || true")
        r.sim.set_auto_link(True)
    _wait_healthy(r)
    assert crm_rows(r) == crm  # the other bot's table
    assert snapshot(r)["head"] == head  # the working copy stays on its commit
    assert _facts(r)["process"]["instances"] == 1


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


def test_4_rollback_of_an_adopted_working_copy_is_a_persons_step(adlab: RcLab) -> None:
    """waops does not rewrite an adopted working copy: a rollback names the last known good commit (the
    newest verified backup taken on another commit) and the exact commands, and changes nothing."""
    r = adlab
    good = snapshot(r)["head"]
    r.ssh(1, f"cd {WORKDIR} && echo '// hotfix' >> index.js && git commit -qam 'hotfix' && git rev-parse HEAD",
          check=True)
    head = snapshot(r)["head"]
    assert head != good
    proc = _run("ansible-playbook", "-i", str(r.inventory), "playbooks/rollback_release.yml", "-e",
                f"waops_bot={APP}", "--limit", r.host(1).name, timeout=600)
    assert proc.returncode != 0
    assert f"git checkout {good}" in proc.stdout and f"pm2 restart {APP}" in proc.stdout, proc.stdout[-3000:]
    assert snapshot(r)["head"] == head  # nothing was checked out


# --- into the managed layout ---------------------------------------------------------------------------
UNIT = f"waops-bot-{APP}.service"


def _device(r: RcLab) -> str:
    """The device the phone sees connected (older ones stay listed: the first life, a relink)."""
    devices = [d for d in r.sim.phone(r.host(1).bots[0]["phone"])["devices"] if d.get("connected")]
    assert len(devices) == 1, devices
    return str(devices[0]["id"])


def _manage(r: RcLab, *extra: str, verify_timeout: int = 150) -> tuple[int, dict[str, Any]]:
    proc = _run(_waops(), "manage", "-i", str(r.inventory), r.host(1).name, "--bot", APP, "--output", "json",
                "--verify-timeout", str(verify_timeout), *extra, timeout=1800)
    try:
        return proc.returncode, json.loads(proc.stdout)["results"][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-3000:]}") from None


def _entry(r: RcLab) -> dict[str, Any]:
    doc = yaml.safe_load((r.inventory / "host_vars" / f"{r.host(1).name}.yml").read_text())
    (entry,) = doc["waops_bots"]
    return entry


def _pm2_apps(r: RcLab) -> tuple[list[str], str]:
    """pm2's live apps and its saved dump (what `pm2 resurrect` and a reboot bring back)."""
    apps = [a["name"] for a in json.loads(r.ssh(1, "pm2 jlist"))]
    return apps, r.ssh(1, "cat /root/.pm2/dump.pm2")


def test_5_move_into_the_managed_layout_rolls_back_when_the_session_does_not_come_back(adlab: RcLab) -> None:
    """The operator readies the code for the managed layout (its auth folder from WAOPS_AUTH_DIR, the bot
    process contract) and, by mistake, names a version that cannot start: the move puts the adopted bot
    back, open, as the same device, and the inventory keeps the adopted entry."""
    r = adlab
    contract = f"s#'{FOLDER}'#process.env.WAOPS_AUTH_DIR || '{FOLDER}'#"
    r.ssh(1, f"""set -e; cd {WORKDIR}
if ! grep -q WAOPS_AUTH_DIR index.js; then
  sed -i "{contract}" index.js; git commit -qam 'auth folder from WAOPS_AUTH_DIR'
fi
git checkout -qB broken; echo "throw new Error('config.json missing')" >> index.js; git commit -qam wip
git checkout -q -""", check=True)
    _wait_healthy(r)
    device, entry, crm = _device(r), _entry(r), crm_rows(r)
    rc, res = _manage(r, "--version", "broken", verify_timeout=90)
    assert (rc, res["outcome"]) == (1, "rolled_back"), res
    assert [s["name"] for s in res["steps"] if not s["ok"]][:1] == ["verify managed"], res["steps"]
    assert _entry(r) == entry  # still adopted
    assert json.loads(r.ssh(1, f"cat /etc/waops/bots/{APP}.json"))["adopted"] is True
    assert r.ssh(1, f"systemctl is-enabled {UNIT} || true").strip() == "disabled"
    apps, dump = _pm2_apps(r)
    assert apps == [APP] and APP in dump
    _wait_healthy(r)
    assert _device(r) == device and crm_rows(r) == crm
    assert _facts(r)["process"]["instances"] == 1


def test_6_move_into_the_managed_layout_keeps_the_link(adlab: RcLab) -> None:
    r = adlab
    phone = r.host(1).bots[0]["phone"]
    device, crm = _device(r), crm_rows(r)
    head = snapshot(r)["head"]
    mark = len(r.sim.events(phone))
    rc, res = _manage(r)
    assert (rc, res["outcome"]) == (0, "managed"), res
    assert res["inventory"]["written"], res
    entry = _entry(r)
    assert "adopted" not in entry and entry["service_manager"] == "systemd" and entry["auth_store"] == "files"
    assert entry["source"] == {"type": "git", "url": WORKDIR, "version": head} and entry["phone"] == phone
    # the old pm2 app stopped and gone from pm2's dump; the bot runs as its own user under its unit
    apps, dump = _pm2_apps(r)
    assert APP not in apps and APP not in dump, (apps, dump)
    assert r.ssh(1, f"systemctl is-active {UNIT}").strip() == "active"
    assert r.ssh(1, f"ps -u wa-{APP} -o args=").count("index.js") == 1
    cfg = json.loads(r.ssh(1, f"cat /etc/waops/bots/{APP}.json"))
    assert not cfg.get("adopted") and cfg["auth_store"] == "files"
    _wait_healthy(r)
    kinds = [e["type"] for e in r.sim.events(phone)[mark:]]
    assert "qr" not in kinds and "linked" not in kinds, kinds
    assert _device(r) == device
    f = _facts(r)
    assert f["auth"]["store"] == "files" and f["auth"]["creds"]["linked"], f["auth"]
    assert f["process"]["instances"] == 1
    # the rewritten inventory is what the next provision keeps: still the same device, still open
    _provision(r)
    _wait_healthy(r)
    assert _device(r) == device and crm_rows(r) == crm
