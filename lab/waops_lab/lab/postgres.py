"""A PostgreSQL instance owned by the lab, listening on the bridge: the managed database of production.

It runs the machine's PostgreSQL binaries on a data directory of the lab's own, so the machine's
server and its configuration are never touched, and `lab down` removes it whole."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from waops_lab.errors import LabError
from waops_lab.lab.shell import run

DB_NAME = "waops"
DB_USER = "waops"


def _bindir() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise LabError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return versions[-1].parent


class LabPostgres:
    def __init__(self, data_dir: Path, listen: str, port: int, subnet: str) -> None:
        self.data_dir = data_dir
        self.listen, self.port, self.subnet = listen, port, subnet
        self.password_file = data_dir.parent / "pg-password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn(self) -> str:
        return f"host={self.listen} port={self.port} dbname={DB_NAME} user={DB_USER} password={self.password}"

    def start(self) -> None:
        bindir = _bindir()
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(parents=True)
            shutil.chown(self.data_dir, "postgres", "postgres")
            self.password_file.write_text(secrets.token_urlsafe(18) + "\n")
            self.password_file.chmod(0o600)
            run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(self.data_dir),
                 "-A", "trust", "-U", "postgres", "--no-sync"], timeout=120)
            hba = self.data_dir / "pg_hba.conf"
            hba.write_text("local all all trust\n"
                           f"host all all {self.subnet} scram-sha-256\n")
        if not (self.data_dir / "server.crt").exists():  # a data dir made before the lab offered TLS
            self._certificate()
        if self.running():
            return  # `lab up` adding hosts to a lab that already runs: pg_ctl start would fail
        run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-w",
             "-l", str(self.data_dir / "server.log"), "-o",
             f"-c listen_addresses={self.listen} -c port={self.port} -c unix_socket_directories={self.data_dir}"
             " -c fsync=off -c password_encryption=scram-sha-256"
             # TLS as a managed database offers it: bots connect with sslmode=require (plain still allowed)
             " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
             "start"], timeout=60)
        self._psql(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN "
                   f"CREATE ROLE {DB_USER} LOGIN; END IF; END$$;")
        # the password goes through a psql variable on stdin, never on a command line
        run(["runuser", "-u", "postgres", "--", "psql", "-h", str(self.data_dir), "-p", str(self.port),
             "-v", "ON_ERROR_STOP=1", "-q", "-d", "postgres"],
            input=f"\\set pw '{self.password}'\nALTER ROLE {DB_USER} PASSWORD :'pw';\n")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'").strip()
        if exists != "1":
            self._psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")

    def _certificate(self) -> None:
        """A self-signed server certificate in the data directory (sslmode=require checks no CA, as with
        most managed databases reached without their CA bundle)."""
        crt, key = self.data_dir / "server.crt", self.data_dir / "server.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "30", "-subj", f"/CN={self.listen}", "-keyout", str(key), "-out", str(crt)], timeout=60)
        key.chmod(0o600)
        for f in (crt, key):
            shutil.chown(f, "postgres", "postgres")

    def running(self) -> bool:
        return run(["runuser", "-u", "postgres", "--", str(_bindir() / "pg_ctl"), "-D", str(self.data_dir),
                    "status"], check=False).returncode == 0

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            run(["runuser", "-u", "postgres", "--", str(_bindir() / "pg_ctl"), "-D", str(self.data_dir),
                 "-m", "immediate", "-w", "stop"], check=False, timeout=60)

    def _psql(self, sql: str, db: str = "postgres") -> str:
        return run(["runuser", "-u", "postgres", "--", "psql", "-h", str(self.data_dir), "-p", str(self.port),
                    "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]).stdout
