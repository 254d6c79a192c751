"""One bot's agent config (`/etc/waops/bots/<bot>.json`), validated up front."""

from __future__ import annotations

import os
from typing import Any

from .base import AUTH_STORES, BOT_NAME_RE, ConfigError, read_small_json
from .pglayout import pg_check_layout
from .sqlitestore import SQLITE_TABLE_RE


class BotConfig:
    """One bot's agent config (`/etc/waops/bots/<bot>.json`), validated up front."""

    def __init__(self, doc: dict[str, Any], path: str) -> None:
        self.doc, self.path = doc, path
        name = doc.get("name")
        if not isinstance(name, str) or not BOT_NAME_RE.match(name):
            raise ConfigError(f"{path}: 'name' must match [a-z0-9_-]+")
        self.name = name
        self.user = str(doc.get("user") or f"wa-{name}")
        self.service_manager = doc.get("service_manager", "pm2")
        if self.service_manager not in ("pm2", "systemd"):
            raise ConfigError(f"{path}: service_manager must be pm2 or systemd")
        self.service_name = str(doc.get("service_name") or name)
        self.pm2_home = str(doc.get("pm2_home") or f"/var/lib/waops/bots/{name}/.pm2")
        self.release_root = str(doc.get("release_root") or f"/opt/waops/bots/{name}")
        self.auth_store = doc.get("auth_store", "files")
        if self.auth_store not in AUTH_STORES:
            raise ConfigError(f"{path}: auth_store must be one of {', '.join(AUTH_STORES)}")
        self.auth_dir = os.path.normpath(str(doc.get("auth_dir") or f"/var/lib/waops/bots/{name}/auth"))
        if not os.path.isabs(self.auth_dir) or self.auth_dir == "/":
            raise ConfigError(f"{path}: auth_dir must be an absolute path below /")
        self.health_file = str(doc.get("health_file") or f"/var/lib/waops/bots/{name}/health.json")
        self.backup_dir = os.path.normpath(str(doc.get("backup_dir") or f"/var/backups/waops/{name}"))
        self.backup_keep = self._int("backup_keep", 12, 1)
        self.library_package = str(doc.get("library_package") or "baileys")
        self.expected_library_version = doc.get("expected_library_version")
        self.known_bad_versions = [str(v) for v in doc.get("known_bad_versions") or []]
        self.log_window_bytes = self._int("log_window_bytes", 262144, 1024)
        self.log_files = doc.get("log_files") or None  # {"out": path, "err": path}: plain files
        self.age_recipient = doc.get("backup_age_recipient") or None
        self.age_identity_file = doc.get("backup_age_identity_file") or None
        pk = doc.get("prune_keys") or {}
        if not isinstance(pk, dict):
            raise ConfigError(f"{path}: prune_keys must be an object")
        self.prekeys_keep = pk.get("prekeys_keep", 812)
        if not isinstance(self.prekeys_keep, int) or isinstance(self.prekeys_keep, bool) or self.prekeys_keep < 0:
            raise ConfigError(f"{path}: prune_keys.prekeys_keep must be an integer >= 0")
        days = pk.get("sender_key_days", 14)
        if not isinstance(days, (int, float)) or isinstance(days, bool) or not 0 <= days < 1e6:
            raise ConfigError(f"{path}: prune_keys.sender_key_days must be a number >= 0")
        self.sender_key_days = float(days)
        self.prune_sessions = pk.get("sessions", "broken")
        if self.prune_sessions not in ("broken", "all"):
            raise ConfigError(f"{path}: prune_keys.sessions must be broken or all")
        self.pg: dict[str, Any] | None = None
        if self.auth_store == "postgres":
            pg = doc.get("postgres")
            if not isinstance(pg, dict):
                raise ConfigError(f"{path}: auth_store is postgres but 'postgres' is missing")
            for k in ("host", "dbname", "user", "table"):
                if not pg.get(k):
                    raise ConfigError(f"{path}: postgres.{k} is required")
            self.pg = {"port": 5432, "session": name, **pg}
            pg_check_layout(self.pg, path)
        self.sqlite: dict[str, str] | None = sqlite_config(doc, path, name) if self.auth_store == "sqlite" else None
        # An adopted bot (deployed by someone else): its code is a working directory, not releases.
        self.adopted = doc.get("adopted") is True
        self.workdir = os.path.normpath(str(doc["workdir"])) if doc.get("workdir") else None
        if self.workdir is not None and (not os.path.isabs(self.workdir) or self.workdir == "/"):
            raise ConfigError(f"{path}: workdir must be an absolute path below /")

    def _int(self, key: str, default: int, minimum: int) -> int:
        value = self.doc.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{self.path}: {key} must be an integer >= {minimum}")
        return value


def load_configs(config_dir: str, bot: str | None) -> list[BotConfig]:
    if bot is not None and not BOT_NAME_RE.match(bot):
        raise ConfigError(f"bad bot name {bot!r}: must match [a-z0-9_-]+")
    if not os.path.isdir(config_dir):
        raise ConfigError(f"config dir {config_dir} does not exist")
    names = [f"{bot}.json"] if bot else sorted(n for n in os.listdir(config_dir) if n.endswith(".json"))
    configs = []
    for n in names:
        path = os.path.join(config_dir, n)
        try:
            doc = read_small_json(path)
        except FileNotFoundError:
            raise ConfigError(f"no config for bot {bot!r} in {config_dir}") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable config: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: config must be a JSON object")
        cfg = BotConfig(doc, path)
        if cfg.name != n[:-5]:
            raise ConfigError(f"{path}: name {cfg.name!r} does not match the file name")
        configs.append(cfg)
    if not configs:
        raise ConfigError(f"no bot configs in {config_dir}")
    return configs


def sqlite_config(doc: dict[str, Any], path: str, name: str) -> dict[str, str]:
    sq = doc.get("sqlite") or {}
    if not isinstance(sq, dict):
        raise ConfigError(f"{path}: sqlite must be an object")
    db = os.path.normpath(str(sq.get("path") or f"/var/lib/waops/bots/{name}/auth.db"))
    if not os.path.isabs(db) or db == "/":
        raise ConfigError(f"{path}: sqlite.path must be an absolute file path")
    table = str(sq.get("table") or "baileys_auth")
    if not SQLITE_TABLE_RE.match(table):
        raise ConfigError(f"{path}: sqlite.table must match [A-Za-z_][A-Za-z0-9_]*")
    return {"path": db, "table": table}
