"""Benchmark of the host agent's backup and verify (run on demand, prints figures, asserts nothing).

    python3 tests/bench/bench_backup.py [--rows 10000] [--sizes 1000,10000] [--repeat 3]

Builds auth folders shaped like Baileys' (mostly pre-keys, some sessions and sender keys) in a temp dir,
and a throwaway PostgreSQL database on 127.0.0.1 (user postgres) with --rows rows, dropped at the end.
Target: 10k files + 10k rows backed up (and verified, which `backup` always does) in under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "roles" / "waops_host" / "files" / "waops-host"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(["psql", "-X", "-qAt", "-h", "127.0.0.1", "-U", "postgres", "-d", db,
                           "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def make_auth(path: Path, n: int) -> None:
    path.mkdir(parents=True)
    (path / "creds.json").write_text(json.dumps({"me": {"id": "15550100001:3@s.whatsapp.net"},
                                                 "account": {"details": secrets.token_hex(64)}}))
    for i in range(n - 1):
        if i % 20 == 0:
            name = f"session-1555010{i:05d}.0.json"
            body = {"_sessions": {secrets.token_hex(16): secrets.token_hex(1200)}}
        elif i % 20 == 1:
            name, body = f"sender-key-1203630{i}@g.us--1555@s.whatsapp.net.json", [secrets.token_hex(300)]
        else:
            name, body = f"pre-key-{i}.json", {"private": {"type": "Buffer", "data": secrets.token_urlsafe(32)},
                                               "public": {"type": "Buffer", "data": secrets.token_urlsafe(32)}}
        (path / name).write_text(json.dumps(body))


def run(args: list[str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run([PYTHON, str(AGENT), *args], capture_output=True, text=True, check=False)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {p.stderr.strip()}")
    return dt


def bench(root: Path, files: int, rows: int, db: str | None, repeat: int) -> None:
    name = f"b{files}"
    auth = root / name / "auth"
    make_auth(auth, files)
    cfg_dir = root / name / "cfg"
    cfg_dir.mkdir()
    cfg = {"schema": 1, "name": name, "user": "root", "auth_store": "files", "auth_dir": str(auth),
           "backup_dir": str(root / name / "backups"), "release_root": str(root / "none"), "backup_keep": 100}
    if db and rows:
        psql(f"INSERT INTO baileys_auth(session, key, value) SELECT '{name}', 'pre-key-' || i, "
             f"jsonb_build_object('private', md5(i::text) || md5((i*7)::text), 'public', md5((i*3)::text)) "
             f"FROM generate_series(1, {rows}) i", db)
        cfg.update(auth_store="postgres", postgres={"host": "127.0.0.1", "port": 5432, "dbname": db,
                                                    "user": "postgres", "table": "baileys_auth", "session": name})
    (cfg_dir / f"{name}.json").write_text(json.dumps(cfg))
    common = ["--bot", name, "--config-dir", str(cfg_dir), "--lock-dir", str(root / "lock")]
    backups = [run(["backup", "--reason", "manual", *common]) for _ in range(repeat)]
    verifies = [run(["verify", *common]) / repeat for _ in range(1)]  # verify checks every backup
    facts = [run(["facts", *common, "--json"]) for _ in range(repeat)]
    size = sum(f.stat().st_size for f in auth.iterdir())
    bdir = next(d for d in (root / name / "backups").iterdir() if not d.name.startswith("."))
    bsize = sum(f.stat().st_size for f in bdir.iterdir())
    label = f"{files} files ({size / 1e6:.1f} MB)" + (f" + {rows} rows" if db and rows else "")
    print(f"{label:<34} backup+verify {statistics.median(backups):6.2f} s (min {min(backups):.2f})   "
          f"verify {statistics.median(verifies):5.2f} s per backup   facts {statistics.median(facts):5.2f} s   "
          f"set {bsize / 1e6:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    db = None
    try:
        psql("SELECT 1")
        db = f"waops_bench_{secrets.token_hex(4)}"
        psql(f"CREATE DATABASE {db}")
        psql("CREATE TABLE baileys_auth(session text not null, key text not null, value jsonb not null, "
             "updated_at timestamptz not null default now(), primary key (session, key))", db)
    except (subprocess.CalledProcessError, FileNotFoundError):
        print("PostgreSQL on 127.0.0.1 not available: files only")
        db = None
    print(f"waops-host backup benchmark ({os.cpu_count()} CPUs, python {PYTHON})")
    try:
        with tempfile.TemporaryDirectory(prefix="waops-bench-") as tmp:
            for n in (int(x) for x in a.sizes.split(",")):
                bench(Path(tmp), n, 0, None, a.repeat)
                if db:
                    bench(Path(tmp) / "pg", n, a.rows, db, a.repeat)
    finally:
        if db:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
