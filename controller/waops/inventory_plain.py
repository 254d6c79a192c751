"""Plain YAML/INI inventories read without importing Ansible (importing it costs most of a diagnose).

The rules are Ansible's own, for what they cover: a file or a directory of files,
`all`/`children`/`hosts`/`vars` in YAML, `[group]`, `[group:vars]`, `[group:children]` and
`host key=value` in INI (values through `ast.literal_eval`, as Ansible does), host ranges such as
`web[01:03]` and `db[a:c]`, `group_vars/` and `host_vars/` beside the inventory (files or
directories), and variable precedence (Ansible's default VARIABLE_PRECEDENCE): `all`'s inventory vars <
the other groups' inventory vars (by depth, ansible_group_priority, name) < group_vars/all < the other
groups' group_vars files < the host's inventory vars < host_vars/<host>. Top-level keys replace, as
with Ansible's default hash_behaviour.

Anything outside that raises NeedAnsible with the reason, and the caller hands the inventory to
Ansible's loader: a whole-file vault, an executable (script) inventory, a plugin config, an unusual
host pattern, a file that is not clearly YAML or INI, a YAML tag other than `!vault`, and (checked by
the caller, for the variables waops reads) templates or inline vault values.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

YAML_EXTS = (".yml", ".yaml", ".json")
IGNORED_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
_IGNORED_NAMES = ("host_vars", "group_vars", "vars_plugins")
_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")
_RANGE = re.compile(r"\[[a-zA-Z0-9]*:[a-zA-Z0-9]+(?::[0-9]+)?\]")
_HOST_PORT = re.compile(r"^([^:\[\]]*(?:\[[^\]]*\][^:\[\]]*)*)(?::([0-9]+))?$")


# Settings that change how Ansible reads an inventory: when one is set in the environment, Ansible reads.
_ANSIBLE_ENV = ("ANSIBLE_PRECEDENCE", "ANSIBLE_HASH_BEHAVIOUR", "ANSIBLE_INVENTORY_ENABLED",
                "ANSIBLE_INVENTORY_IGNORE", "ANSIBLE_INVENTORY_IGNORE_REGEX", "ANSIBLE_YAML_FILENAME_EXT",
                "ANSIBLE_VARS_ENABLED")


class NeedAnsible(Exception):
    """This inventory needs Ansible's loader; str() says why."""


class Vaulted:
    """An inline `!vault` value: only Ansible can decrypt it."""

    def __repr__(self) -> str:
        return "<vaulted>"


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    depth: int = 0
    priority: int = 1


@dataclass
class PlainInventory:
    basedirs: list[Path]
    groups: dict[str, Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # from inventory files, in order
    host_groups: dict[str, list[str]] = field(default_factory=dict)  # direct groups of each host
    files: list[str] = field(default_factory=list)  # what was read
    _vars_cache: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.add_child("all", "ungrouped")  # as Ansible's InventoryData starts

    # --------------------------------------------------------------------------------- building
    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def add_host(self, host: str, group: str, port: int | None = None) -> None:
        self.host_vars.setdefault(host, {})
        direct = self.host_groups.setdefault(host, [])
        if group != "ungrouped" or not direct:
            g = self.group(group)
            if host not in g.hosts:
                g.hosts.append(host)
            if group not in direct:
                direct.append(group)
        if port is not None:
            self.host_vars[host]["ansible_port"] = port

    def add_child(self, parent: str, child: str) -> None:
        p, c = self.group(parent), self.group(child)
        if child == parent or parent in self.ancestors(child) | {child}:
            raise NeedAnsible(f"group {child} and {parent} form a loop")
        if child not in p.children:
            p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)

    def set_group_var(self, group: str, key: str, value: Any) -> None:
        self.group(group).vars[key] = value
        if key == "ansible_group_priority":
            try:
                self.group(group).priority = int(value)
            except (TypeError, ValueError):
                raise NeedAnsible(f"ansible_group_priority of {group} is not a number") from None

    def ancestors(self, group: str) -> set[str]:
        out: set[str] = set()
        todo = list(self.groups[group].parents) if group in self.groups else []
        while todo:
            g = todo.pop()
            if g not in out:
                out.add(g)
                todo.extend(self.groups[g].parents)
        return out

    def reconcile(self) -> None:
        """Ansible's reconcile_inventory: every group under `all`, lone hosts in `ungrouped`, depths."""
        self.group("all")
        self.group("ungrouped")
        for name in list(self.groups):
            if name != "all" and not self.groups[name].parents:
                self.add_child("all", name)
        for host, direct in self.host_groups.items():
            real = [g for g in direct if g not in ("all", "ungrouped")]
            if real:
                direct[:] = real
                ung = self.groups["ungrouped"]
                if host in ung.hosts:
                    ung.hosts.remove(host)
            else:
                direct[:] = ["ungrouped"]
                if host not in self.groups["ungrouped"].hosts:
                    self.groups["ungrouped"].hosts.append(host)
        # depth: the longest path from `all`
        depth: dict[str, int] = {}

        def walk(name: str, d: int, seen: frozenset[str]) -> None:
            if name in seen:
                raise NeedAnsible(f"group {name} is its own ancestor")
            if depth.get(name, -1) >= d:
                return
            depth[name] = d
            for c in self.groups[name].children:
                walk(c, d + 1, seen | {name})

        walk("all", 0, frozenset())
        for name, g in self.groups.items():
            g.depth = depth.get(name, 0)

    # --------------------------------------------------------------------------------- reading
    def groups_of(self, host: str) -> list[str]:
        """All groups of a host (with ancestors and `all`), in Ansible's order: depth, priority, name."""
        names: set[str] = set()
        for g in self.host_groups.get(host, []):
            names.add(g)
            names |= self.ancestors(g)
        names.add("all")
        return sorted(names, key=lambda n: (self.groups[n].depth, self.groups[n].priority, n))

    def hosts_of(self, group: str) -> list[str]:
        """Hosts of a group and its descendants, as Ansible's get_hosts walks them: the group, its
        children in order, then deeper levels breadth first (Ansible's order there is a set's)."""
        ordered = [group, *self.groups[group].children]
        level = list(self.groups[group].children)
        while level:
            nxt: list[str] = []
            for g in level:
                for c in self.groups[g].children:
                    if c not in ordered:
                        ordered.append(c)
                        nxt.append(c)
            level = nxt
        out: list[str] = []
        for g in ordered:
            out.extend(h for h in self.groups[g].hosts if h not in out)
        return out

    def vars_for(self, host: str) -> dict[str, Any]:
        groups = self.groups_of(host)
        out: dict[str, Any] = dict(self.groups["all"].vars)
        for g in groups:
            if g != "all":
                out.update(self.groups[g].vars)
        out.update(self._files("group_vars", "all"))
        for g in groups:
            if g != "all":
                out.update(self._files("group_vars", g))
        out.update(self.host_vars.get(host, {}))
        out.update(self._files("host_vars", host))
        return out

    def _files(self, kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for base in self.basedirs:
            for path in vars_files(base / kind, name):
                if path not in self._vars_cache:
                    data = load_yaml(path)
                    if data is None:
                        data = {}
                    if not isinstance(data, dict):
                        raise NeedAnsible(f"{path} is not a mapping of variables")
                    self._vars_cache[path] = data
                    self.files.append(str(path))
                out.update(self._vars_cache[path])
        return out


# ------------------------------------------------------------------------------------------ files
def read(source: Path) -> PlainInventory:
    """The plain inventory at `source` (a file or a directory), or NeedAnsible."""
    for name in _ANSIBLE_ENV:
        if os.environ.get(name):
            raise NeedAnsible(f"{name} is set")
    if source.is_dir():
        inv = PlainInventory(basedirs=[source])
        for path in _dir_sources(source):
            _read_file(inv, path)
    else:
        inv = PlainInventory(basedirs=[source.parent])
        _read_file(inv, source)
    inv.reconcile()
    return inv


def _dir_sources(d: Path) -> Iterable[Path]:
    for name in sorted(os.listdir(d)):
        if name.startswith(".") or name in _IGNORED_NAMES or name.endswith(IGNORED_EXTS):
            continue
        p = d / name
        if p.is_dir():
            yield from _dir_sources(p)
        else:
            yield p


def _read_file(inv: PlainInventory, path: Path) -> None:
    if os.access(path, os.X_OK):
        raise NeedAnsible(f"{path} is executable (a script inventory)")
    ext = path.suffix.lower()
    if ext not in ("", ".ini", *YAML_EXTS):
        raise NeedAnsible(f"{path}: not a .yml/.yaml/.json/.ini file")
    text = _read_text(path)
    if "$ANSIBLE_VAULT" in text[:64]:
        raise NeedAnsible(f"{path} is vault-encrypted")
    inv.files.append(str(path))
    if ext in YAML_EXTS:
        _yaml_inventory(inv, path, text)
        return
    if ext == "":
        try:
            data = _yaml(text, path)
        except NeedAnsible:
            data = None
        if isinstance(data, dict):
            _yaml_inventory(inv, path, text, data)
            return
    _ini_inventory(inv, path, text)


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NeedAnsible(f"cannot read {path}: {exc}") from None


def vars_files(d: Path, name: str) -> list[Path]:
    """Ansible's find_vars_files: `name` (a directory of files, recursively) then the first of
    name, name.yml, name.yaml, name.json that is a file."""
    found: list[Path] = []
    for ext in ("", *YAML_EXTS):
        p = d / (name + ext)
        if p.is_dir():
            found.extend(_dir_vars(p))
        elif p.is_file():
            found.append(p)
            break
    return found


def _dir_vars(d: Path) -> list[Path]:
    out: list[Path] = []
    for name in sorted(os.listdir(d)):
        if name.startswith(".") or name.endswith("~"):
            continue
        p = d / name
        ext = os.path.splitext(name)[1]
        if p.is_dir() and not ext:
            out.extend(_dir_vars(p))
        elif p.is_file() and (not ext or ext in YAML_EXTS):
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------ YAML
def _loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type]
        pass

    Loader.add_constructor("!vault", lambda loader, node: Vaulted())
    return Loader


_LOADER: Any = None


# Parsed YAML kept as JSON by the hash of its text, so that a diagnose on an unchanged inventory never
# imports the YAML library (its import is a sixth of a one-host diagnose). Content-addressed: an edited
# file is a new key; only documents JSON keeps exactly (no dates, sets, vault tags) are kept.
YAML_CACHE_ENV = "WAOPS_YAML_CACHE"  # a directory, or "off"


def _cache_dir() -> Path | None:
    v = os.environ.get(YAML_CACHE_ENV, "")
    if v == "off":
        return None
    return Path(v) if v else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "waops" / "yaml"


def _cached(text: str) -> tuple[Path | None, Any]:
    d = _cache_dir()
    if d is None:
        return None, None
    import hashlib

    p = d / (hashlib.sha256(text.encode()).hexdigest() + ".json")
    try:
        with open(p, "rb") as f:
            return p, json.loads(f.read())
    except (OSError, ValueError):
        return p, None


def _json_exact(v: Any) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_exact(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_json_exact(x) for x in v)
    return v is None or isinstance(v, (str, bool, int, float))


def _keep(p: Path, data: Any) -> None:
    if not _json_exact(data):
        return
    with contextlib.suppress(OSError):
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, p)


def _yaml(text: str, path: Path) -> Any:
    cache, hit = _cached(text)
    if hit is not None:
        return hit["data"] if isinstance(hit, dict) and "data" in hit else None
    data = _parse_yaml(text, path)
    if cache is not None:
        _keep(cache, {"data": data})
    return data


def _parse_yaml(text: str, path: Path) -> Any:
    global _LOADER
    import yaml

    if _LOADER is None:
        _LOADER = _loader()
    try:
        return yaml.load(text, Loader=_LOADER)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise NeedAnsible(f"{path}: {str(exc).splitlines()[0]}") from None


def load_yaml(path: Path) -> Any:
    text = _read_text(path)
    if "$ANSIBLE_VAULT" in text[:64]:
        raise NeedAnsible(f"{path} is vault-encrypted")
    return _yaml(text, path)


def _yaml_inventory(inv: PlainInventory, path: Path, text: str, data: Any = None) -> None:
    data = _yaml(text, path) if data is None else data
    if not isinstance(data, dict) or not data:
        raise NeedAnsible(f"{path}: not a YAML inventory")
    if "plugin" in data:
        raise NeedAnsible(f"{path} configures an inventory plugin")
    for name, body in data.items():
        _yaml_group(inv, path, str(name), body)


def _yaml_group(inv: PlainInventory, path: Path, name: str, body: Any) -> str:
    if body is not None and not isinstance(body, dict):
        raise NeedAnsible(f"{path}: group {name} is not a mapping")
    inv.group(name)
    for key, value in (body or {}).items():
        if isinstance(value, str) and key in ("vars", "children", "hosts"):
            value = {value: None}
        if value is None:
            continue
        if not isinstance(value, dict) or key not in ("vars", "children", "hosts"):
            raise NeedAnsible(f"{path}: unexpected {key!r} in group {name}")
        if key == "vars":
            for k, v in value.items():
                inv.set_group_var(name, str(k), v)
        elif key == "children":
            for child, child_body in value.items():
                inv.add_child(name, _yaml_group(inv, path, str(child), child_body))
        else:
            for pattern, hvars in value.items():
                if hvars is not None and not isinstance(hvars, dict):
                    raise NeedAnsible(f"{path}: host {pattern} has no mapping of variables")
                names, port = expand_pattern(str(pattern))
                for h in names:
                    inv.add_host(h, name, port)
                    inv.host_vars[h].update(hvars or {})
    return name


# ------------------------------------------------------------------------------------------ INI
def _ini_inventory(inv: PlainInventory, path: Path, text: str) -> None:
    group, state = "ungrouped", "hosts"
    pending_children: dict[str, list[str]] = {}
    pending_vars: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        m = _SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise NeedAnsible(f"{path}:{n}: section [{group}:{state}] has an unknown type")
            if group not in inv.groups and state == "vars":
                pending_vars.add(group)
            inv.group(group)
            if state != "vars":
                pending_vars.discard(group)
                for parent in pending_children.pop(group, []):
                    inv.add_child(parent, group)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise NeedAnsible(f"{path}:{n}: invalid section {line}")
        if state == "hosts":
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise NeedAnsible(f"{path}:{n}: {exc}") from None
            if not tokens:
                continue
            names, port = expand_pattern(tokens[0])
            hvars: dict[str, Any] = {}
            for t in tokens[1:]:
                if "=" not in t:
                    raise NeedAnsible(f"{path}:{n}: expected key=value, got {t}")
                k, v = t.split("=", 1)
                hvars[k] = ini_value(v)
            for h in names:
                inv.add_host(h, group, port)
                inv.host_vars[h].update(hvars)
        elif state == "vars":
            if "=" not in line:
                raise NeedAnsible(f"{path}:{n}: expected key=value, got {line}")
            k, v = (e.strip() for e in line.split("=", 1))
            inv.set_group_var(group, k, ini_value(v))
        else:
            m = _GROUPNAME.match(line)
            if not m:
                raise NeedAnsible(f"{path}:{n}: expected a group name, got {line}")
            child = m.group(1)
            if child in inv.groups:
                inv.add_child(group, child)
            else:
                pending_children.setdefault(child, []).append(group)
    if pending_vars or pending_children:
        raise NeedAnsible(f"{path}: a section names an undefined group")


def ini_value(v: str) -> Any:
    """Ansible's INI value: a Python literal when it is one, else the string."""
    import ast  # only INI inventories need it (its import is a tenth of a diagnose's start-up)

    try:
        value = ast.literal_eval(v)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return v
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_coerce(x) for x in value]
    if isinstance(value, dict):
        return {k: _coerce(x) for k, x in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


# ------------------------------------------------------------------------------------------ hosts
def expand_pattern(pattern: str) -> tuple[list[str], int | None]:
    """`name`, `name:port`, `web[01:03]`, `db[a:c].example.com:2222` -> (names, port)."""
    pattern = pattern.strip()
    if not pattern or pattern == "---" or not _HOSTNAME.match(pattern) or pattern.count(":") > 3:
        raise NeedAnsible(f"host pattern {pattern!r} needs Ansible's parser")
    m = _HOST_PORT.match(pattern)
    if not m or ":" in _RANGE.sub("", m.group(1)):
        raise NeedAnsible(f"host pattern {pattern!r} needs Ansible's parser")
    name, port = m.group(1), m.group(2)
    if "[" in name or "]" in name:
        if _RANGE.sub("", name).count("[") or _RANGE.sub("", name).count("]"):
            raise NeedAnsible(f"host pattern {pattern!r} needs Ansible's parser")
        names = _expand_range(name)
    else:
        names = [name]
    return names, int(port) if port else None


def _expand_range(pattern: str) -> list[str]:
    m = _RANGE.search(pattern)
    if not m:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end():]
    bounds = m.group(0)[1:-1].split(":")
    beg, end = bounds[0] or "0", bounds[1]
    step = int(bounds[2]) if len(bounds) == 3 else 1
    if step < 1:
        raise NeedAnsible(f"host range {m.group(0)} has a bad step")
    if beg[0] == "0" and len(beg) > 1:
        if len(beg) != len(end):
            raise NeedAnsible(f"host range {m.group(0)}: begin and end differ in width")
        width = len(beg)
    else:
        width = 0
    letters = string.ascii_letters
    if beg in letters and end in letters and len(beg) == 1 and len(end) == 1:
        i, j = letters.index(beg), letters.index(end)
        if i > j:
            raise NeedAnsible(f"host range {m.group(0)}: begin is after end")
        seq: list[str] = list(letters[i : j + 1 : step])
    else:
        try:
            seq = [str(x).zfill(width) for x in range(int(beg), int(end) + 1, step)]
        except ValueError:
            raise NeedAnsible(f"host range {m.group(0)} needs Ansible's parser") from None
    out: list[str] = []
    for s in seq:
        out.extend(_expand_range(head + s + tail))
    return out
