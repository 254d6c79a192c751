"""The bot's restic repository: its config, secrets files and the restic command line."""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import subprocess
from typing import TYPE_CHECKING, Any

from .base import EXIT_FAILED, EXIT_USAGE, AgentError, ConfigError, open_regular
from .locks import check_ancestors

if TYPE_CHECKING:
    from .config import BotConfig


_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SFTP_RE = re.compile(r"^sftp:(?:(?P<user>[^@:/\s]+)@)?(?P<host>[^@:/\s]+):(?P<path>.+)$")
_URL_AUTH_RE = re.compile(r"(://)[^/@\s]+@")


class OffhostConfig:
    """The `offhost` object of a bot's agent config (docs/CONTRACTS.md)."""

    def __init__(self, cfg: BotConfig, doc: dict[str, Any]) -> None:
        where = f"{cfg.path}: offhost"
        self.repository = doc.get("repository")
        if not isinstance(self.repository, str) or not self.repository.strip() or "\n" in self.repository:
            raise ConfigError(f"{where}.repository must be a restic repository string")
        for key in ("password_file", "env_file", "ssh_key", "ssh_known_hosts"):
            v = doc.get(key)
            if v is not None and (not isinstance(v, str) or not os.path.isabs(v)):
                raise ConfigError(f"{where}.{key} must be an absolute path")
        if not doc.get("password_file"):
            raise ConfigError(f"{where}.password_file is required")
        self.password_file: str = doc["password_file"]
        self.env_file: str | None = doc.get("env_file")
        self.ssh_key: str | None = doc.get("ssh_key")
        self.ssh_known_hosts: str | None = doc.get("ssh_known_hosts")
        self.restic = str(doc.get("restic") or "restic")
        self.check_subset = str(doc.get("check_subset") or "10%")
        # read after every copy: session sets are small, and a damaged pack must fail the backup job
        self.push_check_subset = str(doc.get("push_check_subset", "100%") or "")
        for key, v in (("check_subset", self.check_subset), ("push_check_subset", self.push_check_subset)):
            if v and not re.match(r"^(\d{1,3}(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$", v):
                raise ConfigError(f"{where}.{key} must look like 10%, 1/5 or 500M")
        keep = doc.get("keep", cfg.backup_keep)
        timeout = doc.get("timeout_s", 1800)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ConfigError(f"{where}.keep must be an integer >= 1")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < 1e6:
            raise ConfigError(f"{where}.timeout_s must be a number of seconds > 0")
        self.keep, self.timeout_s = keep, float(timeout)
        self.bot = cfg.name


def offhost_config(cfg: BotConfig) -> OffhostConfig | None:
    doc = cfg.doc.get("offhost")
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ConfigError(f"{cfg.path}: offhost must be an object")
    return OffhostConfig(cfg, doc)


def redact_repo(text: str) -> str:
    """A REST/S3 URL may carry user:password@; never print it."""
    return _URL_AUTH_RE.sub(r"\1***@", text)


def root_secret_file(path: str, what: str) -> None:
    """A secret restic reads must be root's 0600 (or stricter) regular file under trusted directories."""
    check_ancestors(path)
    try:
        st = os.lstat(path)
    except OSError as e:
        raise AgentError(f"off-host {what} {path}: {e.strerror}", EXIT_USAGE) from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
        raise AgentError(f"off-host {what} {path} must be a regular file of root's, mode 0600", EXIT_USAGE)


def restic_env(oc: OffhostConfig) -> dict[str, str]:
    root_secret_file(oc.password_file, "password file")
    env = {"PATH": os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": pwd.getpwuid(os.geteuid()).pw_dir, "LANG": "C.UTF-8",
           "RESTIC_REPOSITORY": oc.repository, "RESTIC_PASSWORD_FILE": oc.password_file}
    if oc.env_file:  # S3/B2/REST credentials: KEY=VALUE lines
        root_secret_file(oc.env_file, "env file")
        with open_regular(oc.env_file) as f:
            for raw in f.read(1 << 16).decode("utf-8", "replace").splitlines():
                line = raw.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                if _ENV_NAME_RE.match(k.strip()) and k.strip() not in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND"):
                    env[k.strip()] = v.strip()
    return env


def restic_options(oc: OffhostConfig) -> list[str]:
    """SFTP: ssh in batch mode with the bot's own key, a connect timeout and checked host keys, so an
    unreachable host fails in seconds instead of waiting on a prompt."""
    m = _SFTP_RE.match(oc.repository)
    if not m:
        return []
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
           "-o", "ServerAliveCountMax=4"]
    if oc.ssh_key:
        root_secret_file(oc.ssh_key, "ssh key")
        ssh += ["-i", oc.ssh_key, "-o", "IdentitiesOnly=yes"]
    if oc.ssh_known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={oc.ssh_known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    host = f"{m['user']}@{m['host']}" if m["user"] else m["host"]
    return ["-o", "sftp.command=" + " ".join([*ssh, host, "-s", "sftp"])]


def run_restic(oc: OffhostConfig, args: list[str], timeout: float | None = None,
               cwd: str | None = None, input_data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [oc.restic, "--no-cache", *restic_options(oc), *args]
    try:
        return subprocess.run(cmd, env=restic_env(oc), input=input_data, capture_output=True,
                              stdin=subprocess.DEVNULL if input_data is None else None,
                              timeout=timeout or oc.timeout_s, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise AgentError(f"restic {args[0]} timed out after {int(timeout or oc.timeout_s)} s", EXIT_FAILED) from None
    except OSError as e:
        raise AgentError(f"cannot run {oc.restic}: {e.strerror}", EXIT_FAILED) from None


def restic_error(p: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln.strip() for ln in p.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return redact_repo(" | ".join(lines[-3:]) or f"exit {p.returncode}")[:600]


def restic_ok(oc: OffhostConfig, args: list[str], what: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    p = run_restic(oc, args, **kw)
    if p.returncode != 0:
        raise AgentError(f"{what} failed (restic exit {p.returncode}): {restic_error(p)}", EXIT_FAILED)
    return p


def host_id(cfg: BotConfig) -> str:
    return str(cfg.doc.get("host") or socket.gethostname())
