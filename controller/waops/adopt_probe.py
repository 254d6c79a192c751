"""Runs ON a bot host (sent by `waops adopt` to `python3 -`, standard library only, as root): finds the
Baileys bots already running there and prints what it found as one JSON document on stdout.

Read-only. It looks at pm2 apps (every pm2 home: root's, other users', any a running pm2 daemon names) and
systemd units, keeps those whose code loads baileys, @whiskeysockets/baileys or @adiwajshing/baileys,
then their auth folders (useMultiFileAuthState directories with a creds.json) and PostgreSQL auth tables
(a key column and a JSON value column with a `creds` key). A bot user's files are read by a child that
runs as that user (docs/THREAT-MODEL.md), so a hostile bot cannot make this read anything for it.
Secrets never leave the host: a database URL is reported by the name of the variable that holds it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LIBRARIES = ("baileys", "@whiskeysockets/baileys", "@adiwajshing/baileys")
_LOADS = re.compile(r"""(?:require\(|from\s+|import\()\s*['"]"""
                    r"""(@whiskeysockets/baileys|@adiwajshing/baileys|baileys)['"]""")
_MULTI = re.compile(r"""useMultiFileAuthState\(\s*['"`]([^'"`$]{1,200})['"`]""")
_DSN = re.compile(r"^postgres(?:ql)?://")
MAX_SOURCES, MAX_SOURCE = 300, 1 << 20
SKIP_UNITS = re.compile(r"^(?:waops-|pm2-|systemd-|dbus|ssh|cron|getty|user@|postgresql)")


def as_user(uid: int, gid: int, fn: Any, *args: Any) -> Any:
    """fn(*args) in a child that runs as uid/gid (when not root): its JSON result, or None on failure."""
    if uid == 0:
        try:
            return fn(*args)
        except Exception:
            return None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            data = json.dumps(fn(*args)).encode()
        except BaseException:
            data = b"null"
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read(16 << 20)
    os.waitpid(pid, 0)
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _read(path: str, limit: int = MAX_SOURCE) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _json(path: str) -> Any:
    raw = _read(path, 16 << 20)
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------- what runs here


def pm2_homes() -> dict[str, int]:
    """pm2 home -> owner uid: every home a running daemon names, plus root's and each user's ~/.pm2."""
    homes: dict[str, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        cmd = _read(f"/proc/{d}/cmdline", 4096) or ""
        m = re.match(r"PM2 v[^:]*: God Daemon \((/[^)]+)\)", cmd.replace("\0", " "))
        if m:
            with contextlib.suppress(OSError):
                homes[m.group(1)] = os.stat(f"/proc/{d}").st_uid
    for pw in pwd.getpwall():
        home = os.path.join(pw.pw_dir or "/nonexistent", ".pm2")
        if home not in homes and os.path.isdir(home):
            homes[home] = pw.pw_uid
    return homes


def pm2_apps(home: str, uid: int) -> list[dict[str, Any]]:
    """Apps of one pm2 home: the running processes' environments (pm2 hands each app its settings there)
    first, then the saved dump (`pm2 save`) for apps that are stopped."""
    apps: dict[str, dict[str, Any]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        env = _environ(d)
        if env.get("PM2_HOME", "").rstrip("/") != home.rstrip("/") or "pm_id" not in env or "name" not in env:
            continue
        apps.setdefault(env["name"], {"name": env["name"], "cwd": env.get("pm_cwd"), "script": env.get("pm_exec_path"),
                                      "out": env.get("pm_out_log_path"), "err": env.get("pm_err_log_path"),
                                      "env": env, "running": True, "uid": _uid(d)})
    dump = as_user(uid, _gid(uid), _json, os.path.join(home, "dump.pm2"))
    for a in dump if isinstance(dump, list) else []:
        if isinstance(a, dict) and isinstance(a.get("name"), str) and a["name"] not in apps:
            env = {k: str(v) for k, v in (a.get("env") or {}).items() if isinstance(v, (str, int))}
            apps[a["name"]] = {"name": a["name"], "cwd": a.get("pm_cwd"), "script": a.get("pm_exec_path"),
                               "out": a.get("pm_out_log_path"), "err": a.get("pm_err_log_path"), "env": env,
                               "running": False, "uid": uid}
    return list(apps.values())


def _environ(pid: str) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ", 1 << 20) or ""
    return dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return 0


def _gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 65534


def systemd_units() -> list[dict[str, Any]]:
    try:
        out = subprocess.run(["systemctl", "list-units", "--type=service", "--all", "--plain", "--no-legend"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    units = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.endswith(".service") or SKIP_UNITS.match(name):
            continue
        show = subprocess.run(["systemctl", "show", name, "-p", "WorkingDirectory,User,ExecStart,Environment,"
                               "EnvironmentFiles,ActiveState"], capture_output=True, text=True, timeout=20,
                              check=False).stdout
        props = dict(p.split("=", 1) for p in show.splitlines() if "=" in p)
        if "node" not in props.get("ExecStart", "") and "npm" not in props.get("ExecStart", ""):
            continue
        user = props.get("User") or "root"
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            continue
        env = dict(kv.split("=", 1) for kv in props.get("Environment", "").split() if "=" in kv)
        for ef in re.findall(r"(/[^ ;]+) \(ignore_errors", props.get("EnvironmentFiles", "")):
            env.update(as_user(0, 0, _dotenv, ef) or {})  # systemd reads these as root itself
        units.append({"name": name, "cwd": props.get("WorkingDirectory") or None, "user": user, "uid": uid,
                      "env": env, "running": props.get("ActiveState") == "active"})
    return units


# ---------------------------------------------------------------- the bot's code (read as its user)


def _dotenv(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (_read(path, 65536) or "").splitlines():
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2).strip().strip("'\"")
    return env


def inspect_code(workdir: str, home: str) -> dict[str, Any]:
    """(as the bot's user) Which Baileys the code loads, its version, auth folders, .env, table names."""
    res: dict[str, Any] = {"library": None, "version": None, "folders": [], "dotenv": {}, "sources": 0,
                           "idents": [], "git": os.path.isdir(os.path.join(workdir, ".git"))}
    pkg = _json(os.path.join(workdir, "package.json")) or {}
    deps = {**(pkg.get("dependencies") or {}), **(pkg.get("devDependencies") or {})} if isinstance(pkg, dict) else {}
    for lib in LIBRARIES:
        if lib in deps or os.path.isfile(os.path.join(workdir, "node_modules", lib, "package.json")):
            res["library"] = res["library"] or lib
    folders: list[str] = []
    texts: list[str] = []
    for path in _sources(workdir):
        text = _read(path) or ""
        texts.append(text)
        if m := _LOADS.search(text):
            res["library"] = res["library"] or m.group(1)
        for f in _MULTI.findall(text):
            folders.append(os.path.normpath(os.path.join(workdir, os.path.expanduser(f))))
    res["sources"] = len(texts)
    if res["library"]:
        meta = _json(os.path.join(workdir, "node_modules", res["library"], "package.json"))
        res["version"] = meta.get("version") if isinstance(meta, dict) else None
    # folders holding a Baileys creds.json: named in the code, or beside the code, or dot-folders at home
    for base, patterns in ((workdir, ("*/creds.json", ".*/creds.json", "*/*/creds.json")),
                           (home, ("*/creds.json", ".*/creds.json"))):
        for pattern in patterns:
            for c in glob.glob(os.path.join(base, pattern)):
                if "node_modules" not in c:
                    folders.append(os.path.dirname(c))
    res["folders"] = [f for f in dict.fromkeys(folders) if _is_auth_folder(f)]
    res["dotenv"] = _dotenv(os.path.join(workdir, ".env"))
    res["idents"] = sorted(set(re.findall(r"\b[a-z_][a-z0-9_]{2,62}\b", "\n".join(texts))))[:5000]
    return res


def _sources(workdir: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if d not in ("node_modules", ".git") and not d.startswith(".")]
        if root.count(os.sep) - workdir.count(os.sep) > 3:
            dirs[:] = []
        found += [os.path.join(root, f) for f in files if f.endswith((".js", ".cjs", ".mjs", ".ts"))]
        if len(found) >= MAX_SOURCES:
            break
    return found[:MAX_SOURCES]


def _is_auth_folder(path: str) -> bool:
    creds = _json(os.path.join(path, "creds.json"))
    return isinstance(creds, dict) and ("noiseKey" in creds or "signedIdentityKey" in creds)


# ---------------------------------------------------------------- PostgreSQL auth tables

_CANDIDATES = (
    "SELECT k.table_name, k.column_name, v.column_name FROM information_schema.columns k "
    "JOIN information_schema.columns v ON v.table_schema = k.table_schema AND v.table_name = k.table_name "
    "AND v.column_name <> k.column_name WHERE k.table_schema = ANY (current_schemas(false)) "
    "AND k.data_type IN ('text', 'character varying') AND v.data_type IN ('jsonb', 'json', 'text') "
    "ORDER BY 1, 2, 3 LIMIT 200;\n"
)


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pg_tables(dsn: str) -> dict[str, Any]:
    """Auth tables behind one database URL: a key column with a `creds` key (or keys ending in `creds`:
    a prefix per bot) whose value parses as JSON; and whose rows are this bot's (whole table, a scope
    column, a key prefix)."""
    parts = urlsplit(dsn)
    q = parse_qs(parts.query)
    conn = {"host": parts.hostname or "", "port": str(parts.port or 5432), "db": unquote(parts.path.lstrip("/")),
            "user": unquote(parts.username or ""), "sslmode": (q.get("sslmode") or ["prefer"])[0]}
    if not shutil.which("psql"):
        return {"error": "psql is not installed here (postgresql-client)", "sslmode": conn["sslmode"]}
    with tempfile.TemporaryDirectory(prefix="waops-adopt-") as td:
        passfile = os.path.join(td, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        esc = [v.replace("\\", "\\\\").replace(":", "\\:") for v in
               (conn["host"], conn["port"], conn["db"], conn["user"], unquote(parts.password or ""))]
        os.write(fd, (":".join(esc) + "\n").encode())
        os.close(fd)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSFILE": passfile, "PGSSLMODE": conn["sslmode"],
               "PGCONNECT_TIMEOUT": "5", "PGAPPNAME": "waops-adopt"}

        def run(sql: str) -> list[list[str]]:
            p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-w", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                "-h", conn["host"], "-p", conn["port"], "-U", conn["user"], "-d", conn["db"],
                                "-f", "-"],
                               input=sql, capture_output=True, text=True, env=env, timeout=30, check=False)
            if p.returncode != 0:
                raise RuntimeError(" ".join(p.stderr.split())[:300])
            return [line.split("\t") for line in p.stdout.splitlines() if line]

        try:
            cands = run(_CANDIDATES)
            tables = []
            for table, kcol, vcol in cands:
                found = _classify(run, table, kcol, vcol)
                if found:
                    tables.append(found)
        except RuntimeError as e:
            return {"error": f"could not read the database: {e}", "sslmode": conn["sslmode"]}
    return {"tables": tables, "sslmode": conn["sslmode"], "host": conn["host"]}


def _classify(run: Any, table: str, kcol: str, vcol: str) -> dict[str, Any] | None:
    t, k, v = _q(table), _q(kcol), _q(vcol)
    try:
        rows = run(f"SELECT {k}, left({v}::text, 200) FROM {t} WHERE {k} LIKE '%creds' LIMIT 50;\n")
    except RuntimeError:
        return None  # the value column is not JSON, or we may not read the table
    creds = [(key, val) for key, val in rows if val.lstrip().startswith("{")]
    if not creds:
        return None
    out: dict[str, Any] = {"table": table, "key_column": kcol, "value_column": vcol,
                           "rows": int(run(f"SELECT count(*) FROM {t};\n")[0][0])}
    plain = [key for key, _ in creds if key == "creds"]
    if len(plain) == 1 and len(creds) == 1:
        out["scopes"] = [{"kind": "table"}]
        return out
    if plain:  # several bots' creds under the same key: a scope column tells them apart
        cols = run("SELECT column_name FROM information_schema.columns WHERE table_name = "
                   f"{_lit(table)} AND column_name NOT IN ({_lit(kcol)}, {_lit(vcol)}) "
                   "AND data_type IN ('text', 'character varying', 'integer', 'bigint');\n")
        for (col,) in cols:
            vals = run(f"SELECT DISTINCT {_q(col)}::text FROM {t} WHERE {k} = 'creds' LIMIT 50;\n")
            if len(vals) == len(plain):
                out["scopes"] = [{"kind": "column", "column": col, "value": val} for (val,) in vals]
                return out
    out["scopes"] = [{"kind": "prefix", "prefix": key[: -len("creds")]} for key, _ in creds if key != "creds"]
    return out if out["scopes"] else None


# ---------------------------------------------------------------- putting it together


def describe(app: dict[str, Any], manager: str, pm2_home: str | None) -> dict[str, Any] | None:
    workdir = app.get("cwd") or (os.path.dirname(app["script"]) if app.get("script") else None)
    if not workdir or not os.path.isabs(workdir):
        return None
    uid = int(app.get("uid") or 0)
    try:
        pw = pwd.getpwuid(uid)
        user, home = pw.pw_name, pw.pw_dir
    except KeyError:
        return None
    code = as_user(uid, pw.pw_gid, inspect_code, workdir, home)
    if not isinstance(code, dict) or not code.get("library"):
        return None  # not a Baileys bot
    env = {**code.get("dotenv", {}), **(app.get("env") or {})}
    dsns = {name: value for name, value in env.items() if isinstance(value, str) and _DSN.match(value)}
    databases = []
    for name, dsn in sorted(dsns.items()):
        found = pg_tables(dsn)
        found["variable"] = name
        found["from"] = "the process environment" if name in (app.get("env") or {}) else f"{workdir}/.env"
        idents = set(code.get("idents") or [])
        for t in found.get("tables", []):
            t["named_in_code"] = t["table"] in idents
        databases.append(found)
    return {"manager": manager, "name": app["name"], "user": user, "pm2_home": pm2_home, "workdir": workdir,
            "running": bool(app.get("running")), "library": code["library"], "version": code.get("version"),
            "git": bool(code.get("git")), "folders": code.get("folders", []),
            "logs": {k: app[k] for k in ("out", "err") if app.get(k)}, "databases": databases}


def main() -> int:
    if os.geteuid() != 0:
        print(json.dumps({"error": "waops adopt reads every user's pm2 apps and units: it needs root "
                                   "(ansible_user root, or ansible_become with sudo -n)"}))
        return 1
    bots = []
    for home, uid in sorted(pm2_homes().items()):
        for app in pm2_apps(home, uid):
            app.setdefault("uid", uid)
            if (d := describe(app, "pm2", home)) is not None:
                bots.append(d)
    for unit in systemd_units():
        if (d := describe(unit, "systemd", None)) is not None:
            bots.append(d)
    print(json.dumps({"schema": 1, "host": os.uname().nodename, "bots": bots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
