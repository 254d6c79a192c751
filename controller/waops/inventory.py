"""Ansible inventory (YAML or INI, a file or a directory) -> hosts with connection params and bots.

Plain inventories are read by waops.inventory_plain, without importing Ansible (its import is most of
a diagnose's time). Everything else (vault, templated connection variables, plugins, scripts, complex
host patterns) goes to ansible-core's InventoryManager + VariableManager + Templar, so it works as it
does for ansible-playbook; `last_read` says which reader ran and why. Vault secrets come from
ANSIBLE_VAULT_PASSWORD_FILE when set. A malformed inventory is a UsageError with the reason, never a
traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops.adoption import Adopted, is_adopted
from waops.adoption import parse as parse_adopted
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
    adopted: Adopted | None = field(default=None, repr=False)  # an existing bot waops did not deploy


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
    # how Ansible's ssh connection reaches the host, for the OpenSSH probe (waops.openssh)
    port_given: bool = False  # ansible_port set: Ansible passes -o Port and hashes it into ControlPath
    ssh_args: list[str] = field(default_factory=list)  # ansible_ssh_common_args + ansible_ssh_extra_args
    waops_known_hosts: list[str] = field(default_factory=list)  # waops_known_hosts_file
    connection: str | None = None  # ansible_connection
    ssh_executable: str | None = None  # ansible_ssh_executable
    bots: list[Bot] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # EXTRA_VARS that are set

    def public(self) -> dict[str, Any]:
        """What may be shown: no password."""
        return {"name": self.name, "address": self.address, "port": self.port, "user": self.user,
                "bots": [b.name for b in self.bots]}


# Host variables the controller reads besides the connection ones (verify's round-trip hook).
EXTRA_VARS = ("waops_verify_roundtrip_command",)


@dataclass
class ReadInfo:
    """Which reader took the last inventory (shown by --show-settings and WAOPS_DEBUG)."""

    reader: str = ""  # "plain" (no Ansible import) or "ansible"
    why: str = ""  # why Ansible was needed


last_read = ReadInfo()


def load(source: str | os.PathLike[str] | None, patterns: Sequence[str] = ("all",),
         reader: str = "auto") -> list[Host]:
    """Hosts of `source` that match the Ansible host patterns (names, groups, `all`).

    reader: "auto" reads plain YAML/INI inventories itself and hands the rest (vault, templates,
    plugins, scripts, complex patterns) to Ansible; "plain" or "ansible" forces one (tests)."""
    from waops.config import NO_INVENTORY

    if not source:
        raise UsageError(NO_INVENTORY)
    src = str(source)
    if not Path(src).exists():
        raise UsageError(f"inventory not found: {src}")
    if reader != "ansible":
        from waops.inventory_plain import NeedAnsible

        try:
            hosts = _load_plain(Path(src), patterns)
        except NeedAnsible as exc:
            if reader == "plain":
                raise
            last_read.reader, last_read.why = "ansible", str(exc)
        else:
            last_read.reader, last_read.why = "plain", ""
            _debug(src)
            if not hosts:
                raise UsageError(f"no host in {src} matches {' '.join(patterns)}")
            return hosts
    else:
        last_read.reader, last_read.why = "ansible", "asked for"
    hosts = _load_ansible(src, patterns)
    _debug(src)
    return hosts


def _debug(src: str) -> None:
    if os.environ.get("WAOPS_DEBUG"):
        why = f" ({last_read.why})" if last_read.why else ""
        print(f"waops: debug: inventory {src} read by {last_read.reader}{why}", file=sys.stderr)


_SIMPLE_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\-]+$")


def _load_plain(src: Path, patterns: Sequence[str]) -> list[Host]:
    from fnmatch import fnmatchcase

    from waops.inventory_plain import NeedAnsible, read

    words = [w for p in patterns for w in re.split(r"[,:]", p) if w] or ["all"]
    if any(not _SIMPLE_PATTERN.match(w) for w in words):
        raise NeedAnsible("host pattern needs Ansible's pattern rules")
    inv = read(src)
    names: list[str] = []
    for w in words:
        found: list[str] = []
        groups = [g for g in inv.groups if fnmatchcase(g, w)] if w != "*" else ["all"]
        for g in groups:
            found.extend(inv.hosts_of(g))
        if not groups or any(c in w for c in ".?*["):
            found.extend(h for h in inv.host_vars if fnmatchcase(h, w))
        if not found and w in ("localhost", "127.0.0.1", "::1"):
            raise NeedAnsible("implicit localhost")
        names.extend(h for h in found if h not in names)
    hosts = []
    for name in names:
        hostvars = inv.vars_for(name)

        def var(key: str, default: Any = None, hv: dict[str, Any] = hostvars) -> Any:
            value = hv.get(key, default)
            if _needs_templar(value):
                raise NeedAnsible(f"{key} is templated or vaulted")
            return value

        hosts.append(_host(name, var))
    return hosts


def _needs_templar(value: Any) -> bool:
    from waops.inventory_plain import Vaulted

    if isinstance(value, Vaulted):
        return True
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, dict):
        return any(_needs_templar(k) or _needs_templar(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_needs_templar(v) for v in value)
    return False


def _load_ansible(src: str, patterns: Sequence[str]) -> list[Host]:
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    _vault(loader)
    saved = C.INVENTORY_ANY_UNPARSED_IS_FAILED, C.INVENTORY_UNPARSED_IS_FAILED
    warnings = io.StringIO()
    single = not Path(src).is_dir()
    try:
        # A single unparsable file is fatal (a half-read inventory would hide hosts); in a directory,
        # a stray file is named in a warning and the others are read, as ansible-playbook does.
        C.INVENTORY_UNPARSED_IS_FAILED = True
        C.INVENTORY_ANY_UNPARSED_IS_FAILED = single
        with contextlib.redirect_stderr(warnings):
            inv = InventoryManager(loader=loader, sources=[src])
            vm = VariableManager(loader=loader, inventory=inv)
            matched = inv.get_hosts(",".join(patterns) or "all")
            hosts = [_ansible_host(h.name, vm.get_vars(host=h), loader) for h in matched]
    except AnsibleError as exc:
        why = _first_reason(warnings.getvalue()) or str(exc).splitlines()[0]
        raise UsageError(f"malformed inventory {src}: {why}") from None
    finally:
        C.INVENTORY_ANY_UNPARSED_IS_FAILED, C.INVENTORY_UNPARSED_IS_FAILED = saved
    for path in _unparsed(warnings.getvalue()):
        print(f"waops: warning: {path} in the inventory directory is not an inventory; ignored",
              file=sys.stderr)
    if not hosts:
        raise UsageError(f"no host in {src} matches {' '.join(patterns)}")
    return hosts


def _unparsed(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text)
    return list(dict.fromkeys(re.findall(r"Unable to parse (\S+) as an inventory source", flat)))


def _ansible_host(name: str, hostvars: dict[str, Any], loader: Any) -> Host:
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    templar = Templar(loader=loader, variables=hostvars)

    def var(key: str, default: Any = None) -> Any:
        if key not in hostvars:
            return default
        try:
            return _plain(templar.template(hostvars[key]))
        except AnsibleError as exc:
            why = str(exc).splitlines()[0]
            if "undecryptable" in why or "vault" in why.lower():
                why = "it is vault-encrypted and no vault password is set (ANSIBLE_VAULT_PASSWORD_FILE)"
            raise UsageError(f"host {name}: cannot read {key}: {why}") from None

    return _host(name, var)


def _host(name: str, var: Any) -> Host:
    from waops.openssh import split_args

    common = " ".join(str(var(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    known, strict = _ssh_args(common)
    own_known = [os.path.expanduser(str(var("waops_known_hosts_file")))] if var("waops_known_hosts_file") else []
    known = own_known + known
    given_port = var("ansible_port") or var("ansible_ssh_port")
    try:
        port = int(given_port or 22)
    except (TypeError, ValueError):
        raise UsageError(f"host {name}: ansible_port is not a number") from None
    defaults = {**BOT_DEFAULTS, "service_manager": var("waops_service_manager") or BOT_DEFAULTS["service_manager"],
                "auth_store": var("waops_auth_store") or BOT_DEFAULTS["auth_store"]}
    key = var("ansible_ssh_private_key_file") or var("ansible_private_key_file")
    password = var("ansible_password") or var("ansible_ssh_pass")
    return Host(
        name=name,
        address=str(var("ansible_host") or name),
        port=port,
        user=_str(var("ansible_user") or var("ansible_ssh_user")),
        key_file=os.path.expanduser(str(key)) if key else None,
        password=str(password) if password else None,
        known_hosts=[os.path.expanduser(k) for k in known],
        strict_host_keys=strict,
        become=_truthy(var("ansible_become", False)),
        port_given=given_port not in (None, ""),
        ssh_args=split_args(common),
        waops_known_hosts=own_known,
        connection=_str(var("ansible_connection")),
        ssh_executable=_str(var("ansible_ssh_executable")),
        bots=_bots(name, var("waops_bots") or [], defaults),
        extra={k: str(var(k)) for k in EXTRA_VARS if isinstance(var(k), str)},
    )


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


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
        if is_adopted(item):
            adopted = parse_adopted(host, item)
            bots.append(Bot(name=item["name"], service_manager=adopted.manager, auth_store=adopted.auth_store,
                            pairing=str(item.get("pairing") or defaults["pairing"]),
                            library_expected=item.get("library_expected"),
                            extra={k: v for k, v in item.items() if k not in known}, adopted=adopted))
            continue
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
