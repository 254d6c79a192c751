"""Ansible inventory (YAML or INI, a file or a directory) -> hosts with connection params and bots.

ansible-core does the reading (InventoryManager + VariableManager, so group_vars, host_vars,
patterns and vault work as they do for ansible-playbook); it is imported only when an inventory is
read, because it is slow to import. Vault secrets come from ANSIBLE_VAULT_PASSWORD_FILE when set.
A malformed inventory is a UsageError with ansible's reason, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops.errors import UsageError

# CONTRACTS.md "Inventory variables": group defaults for missing bot keys.
BOT_DEFAULTS = {"service_manager": "pm2", "auth_store": "files", "pairing": "qr"}
_BOT_NAME = re.compile(r"^[a-z0-9_-]+$")


@dataclass
class Bot:
    name: str
    service_manager: str = "pm2"
    auth_store: str = "files"
    pairing: str = "qr"
    library_expected: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Host:
    name: str  # inventory name
    address: str  # ansible_host, else the name
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    password: str | None = field(default=None, repr=False)  # ansible_password (vault); never printed
    known_hosts: list[str] = field(default_factory=list)  # besides ~/.ssh/known_hosts
    strict_host_keys: bool = True
    become: bool = False
    bots: list[Bot] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """What may be shown: no password."""
        return {"name": self.name, "address": self.address, "port": self.port, "user": self.user,
                "bots": [b.name for b in self.bots]}


def load(source: str | os.PathLike[str] | None, patterns: Sequence[str] = ("all",)) -> list[Host]:
    """Hosts of `source` that match the Ansible host patterns (names, groups, `all`)."""
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    src = str(source) if source else str(C.DEFAULT_HOST_LIST[0] if C.DEFAULT_HOST_LIST else "")
    if not src or not Path(src).exists():
        raise UsageError(f"inventory not found: {src or '(none given; use -i or WAOPS_INVENTORY)'}")
    loader = DataLoader()
    _vault(loader)
    saved = C.INVENTORY_ANY_UNPARSED_IS_FAILED, C.INVENTORY_UNPARSED_IS_FAILED
    warnings = io.StringIO()
    try:
        # Any unparsable source is fatal here: a half-read inventory would hide hosts silently.
        C.INVENTORY_ANY_UNPARSED_IS_FAILED = C.INVENTORY_UNPARSED_IS_FAILED = True
        with contextlib.redirect_stderr(warnings):
            inv = InventoryManager(loader=loader, sources=[src])
            vm = VariableManager(loader=loader, inventory=inv)
            matched = inv.get_hosts(",".join(patterns) or "all")
            hosts = [_host(h.name, vm.get_vars(host=h), loader) for h in matched]
    except AnsibleError as exc:
        why = _first_reason(warnings.getvalue()) or str(exc).splitlines()[0]
        raise UsageError(f"malformed inventory {src}: {why}") from None
    finally:
        C.INVENTORY_ANY_UNPARSED_IS_FAILED, C.INVENTORY_UNPARSED_IS_FAILED = saved
    if not hosts:
        raise UsageError(f"no host in {src} matches {' '.join(patterns)}")
    return hosts


def _host(name: str, hostvars: dict[str, Any], loader: Any) -> Host:
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    templar = Templar(loader=loader, variables=hostvars)

    def var(key: str, default: Any = None) -> Any:
        if key not in hostvars:
            return default
        try:
            return _plain(templar.template(hostvars[key]))
        except AnsibleError as exc:
            raise UsageError(f"host {name}: cannot read {key}: {str(exc).splitlines()[0]}") from None

    common = " ".join(str(var(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    known, strict = _ssh_args(common)
    if var("waops_known_hosts_file"):
        known.insert(0, str(var("waops_known_hosts_file")))
    try:
        port = int(var("ansible_port") or var("ansible_ssh_port") or 22)
    except (TypeError, ValueError):
        raise UsageError(f"host {name}: ansible_port is not a number") from None
    defaults = {**BOT_DEFAULTS, "service_manager": var("waops_service_manager") or BOT_DEFAULTS["service_manager"],
                "auth_store": var("waops_auth_store") or BOT_DEFAULTS["auth_store"]}
    key = var("ansible_ssh_private_key_file") or var("ansible_private_key_file")
    return Host(
        name=name,
        address=str(var("ansible_host") or name),
        port=port,
        user=var("ansible_user") or var("ansible_ssh_user"),
        key_file=os.path.expanduser(str(key)) if key else None,
        password=var("ansible_password") or var("ansible_ssh_pass"),
        known_hosts=[os.path.expanduser(k) for k in known],
        strict_host_keys=strict,
        become=_truthy(var("ansible_become", False)),
        bots=_bots(name, var("waops_bots") or [], defaults),
    )


def _bots(host: str, raw: Any, defaults: dict[str, str]) -> list[Bot]:
    if not isinstance(raw, list):
        raise UsageError(f"host {host}: waops_bots must be a list of bots")
    bots = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UsageError(f"host {host}: every entry of waops_bots needs a name")
        if not _BOT_NAME.match(item["name"]):
            raise UsageError(f"host {host}: bot name {item['name']!r} must match [a-z0-9_-]+")
        known = {"name", "service_manager", "auth_store", "pairing", "library_expected"}
        bots.append(Bot(
            name=item["name"],
            service_manager=str(item.get("service_manager") or defaults["service_manager"]),
            auth_store=str(item.get("auth_store") or defaults["auth_store"]),
            pairing=str(item.get("pairing") or defaults["pairing"]),
            library_expected=item.get("library_expected"),
            extra={k: v for k, v in item.items() if k not in known},
        ))
    return bots


def _ssh_args(args: str) -> tuple[list[str], bool]:
    """UserKnownHostsFile and StrictHostKeyChecking from `-o` options (either `-o K=V` or `-oK V`)."""
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    opts: list[str] = []
    for k, w in enumerate(words):
        if w == "-o" and k + 1 < len(words):
            opts.append(words[k + 1])
        elif w.startswith("-o") and len(w) > 2:
            opts.append(w[2:])
    known: list[str] = []
    strict = True
    for o in opts:
        key, _, value = o.replace("=", " ", 1).partition(" ")
        if key.lower() == "userknownhostsfile":
            known.extend(v for v in value.split() if v != "/dev/null")
        elif key.lower() == "stricthostkeychecking":
            # waops never adds keys on its own: `no`/`accept-new` are honoured only as "not strict"
            strict = value.strip().lower() not in ("no", "off", "accept-new")
    return known, strict


_vault_secrets: list[Any] | None = None  # ansible allows one vault context per process


def _vault(loader: Any) -> None:
    global _vault_secrets
    pw = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if not pw:
        return
    if _vault_secrets is None:
        from ansible.cli import CLI

        if not Path(pw).exists():
            raise UsageError(f"ANSIBLE_VAULT_PASSWORD_FILE not found: {pw}")
        _vault_secrets = CLI.setup_vault_secrets(loader, vault_ids=[], vault_password_files=[pw],
                                                 ask_vault_pass=False, auto_prompt=False)
    loader.set_vault_secrets(_vault_secrets)


def _plain(v: Any) -> Any:
    """ansible's tagged/vaulted values -> plain Python (decrypting vaulted strings)."""
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return str(v)
    return json.loads(json.dumps(v, default=str))


def _truthy(v: Any) -> bool:
    return v is True or str(v).strip().lower() in ("1", "true", "yes", "on")


def _first_reason(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("[WARNING]", "Failed to parse", "<<<", "Origin:", "(source")):
            return line
    m = re.search(r"\[WARNING\]: (.*)", text)
    return m.group(1) if m else None
