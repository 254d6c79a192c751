"""The PostgreSQL auth store, spoken to through psql (no driver on the host)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from .base import AgentError
from .pglayout import pg_psql_vars


class Psql:
    """Runs Debian's psql with the password read by libpq from PGPASSFILE (never argv or env value).

    Every statement uses psql variables (`:'s'` literal, `:"t"` identifier), so the session name and
    table are quoted by psql, never pasted into SQL text.
    """

    def __init__(self, pg: dict[str, Any], timeout: float = 30.0) -> None:
        self.pg, self.timeout = pg, timeout

    def _cmd(self) -> tuple[list[str], dict[str, str]]:
        psql = shutil.which("psql")
        if not psql:
            raise AgentError("psql is not installed (Debian package postgresql-client)")
        pg = self.pg
        cmd = [psql, "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
               "-h", str(pg["host"]), "-p", str(pg.get("port", 5432)), "-U", str(pg["user"]),
               "-d", str(pg["dbname"]), "-v", f"s={pg['session']}", "-v", f"t={pg['table']}",
               *pg_psql_vars(pg), "-f", "-"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGCONNECT_TIMEOUT": "3", "PGAPPNAME": "waops-host", "LC_ALL": "C.UTF-8"})
        if pg.get("password_file"):
            env["PGPASSFILE"] = str(pg["password_file"])
        if pg.get("sslmode"):
            env["PGSSLMODE"] = str(pg["sslmode"])
        return cmd, env

    def run(self, script: str | bytes, stdout: Any = subprocess.PIPE) -> bytes:
        cmd, env = self._cmd()
        data = script.encode() if isinstance(script, str) else script
        try:
            p = subprocess.run(cmd, input=data, stdout=stdout, stderr=subprocess.PIPE, env=env,
                               timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise AgentError(f"PostgreSQL {self.pg.get('host')}:{self.pg.get('port', 5432)}: psql timed out "
                             f"after {self.timeout:.0f}s") from None
        if p.returncode != 0:
            raise AgentError(self.failure(p.stderr, p.returncode))
        return p.stdout or b""

    def failure(self, stderr: bytes, rc: int | None, what: str = "") -> str:
        """psql's whole error on one line, after the server it was talking to: the last line alone is
        often only a hint ("Is the server running on that host ...?") without host, port or cause."""
        text = " ".join(ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip())
        where = f"PostgreSQL {self.pg.get('host')}:{self.pg.get('port', 5432)}"
        return f"{where}: {what}{text[:1000] or f'psql exit {rc}'}"

    def popen_out(self, script: str) -> subprocess.Popen[bytes]:
        """psql streaming rows on stdout; stderr goes to a temp file so it can never block the pipe."""
        import tempfile

        cmd, env = self._cmd()
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the Popen by the caller
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        assert p.stdin is not None
        p.stdin.write(script.encode())
        p.stdin.close()
        p.stdin = None
        p.stderr = err  # read back by the caller after wait()
        return p


def copy_text_escape(line: str) -> str:
    # COPY text format: backslash, tab, newline, CR are special. JSON text never has raw tab/NL/CR.
    return line.replace("\\", "\\\\")
