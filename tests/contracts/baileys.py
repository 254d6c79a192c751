"""What waops believes about Baileys, checked against real release tarballs (fetch_baileys.py).

Each check takes one unpacked release and returns its differences from what the lab believes (empty: ok):
- `disconnect_reason`: the stand-in's and the simulator's DisconnectReason equal the release's enum, and
  the classifier has a code rule for every value;
- `log_rules`: every log rule names its origin; Baileys' own lines (`literal`) occur in the release's
  lib/*.js and the rule's pattern matches them;
- `standin_words`: the log lines and error messages the stand-in writes as Baileys occur in lib/*.js;
- `auth_files`: the stand-in names auth files as the real `useMultiFileAuthState` does, the host agent
  knows every key type of the release, and a SQLite store (when the release has one) is readable;
- `keepalive_types`: the keep-alive agent type-checks against the release's .d.ts (TypeScript compiler),
  as CommonJS and through its ESM entry from a bot written as an ES module;
- `package`: the release's package.json (`type`, `exports`, `engines`) agrees with the module-system
  boundary (waops_host.versions), the node the roles install, and the stand-in of the same version.
Differences recorded in ACCEPTED (with the reason) do not fail a check; they are listed as accepted.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tests.contracts import fetch_baileys as fb
from waops.rules import ORIGINS  # the rules own the list of origins
from waops_host import keys

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "lab" / "waops_lab" / "sandbox" / "bot" / "vendor"
AGENT_JS = REPO / "roles" / "waops_bot" / "files" / "waops-keepalive"
TSC_DIR = Path(__file__).with_name("tsc")
NODE_TIMEOUT_S = 60
TSC_TIMEOUT_S = 300


@dataclass(frozen=True)
class Accepted:
    check: str
    versions: tuple[str, ...]  # fnmatch patterns on the release's version
    contains: str  # a substring of the difference
    reason: str


# Differences between a real release and the lab that are known and kept on purpose.
ACCEPTED: tuple[Accepted, ...] = (
    Accepted("package", ("7.0.0-rc.9",), "stand-in exports",
             "the stand-in's 7.0.0-rc.9 adds an import-only exports map so that require() fails on the lab's "
             "node 20.20 too: it models a CommonJS bot meeting an ESM-only Baileys (ERR_REQUIRE_ESM on node "
             "< 20.19, where require(esm) is missing). The real rc.9 has no exports map; vendor/baileys-7.0.0 "
             "models that loadable kind"),
    Accepted("standin_words", ("*",), "'unexpected error in handling frame'",
             "sandbox-only: a simulator frame the stand-in cannot handle (real Baileys decodes binary frames)"),
    Accepted("standin_words", ("*",), "'error in opening connection'",
             "sandbox-only: the stand-in's own open sequence failing"),
    Accepted("standin_words", ("*",), "'error uploading pre-keys'",
             "sandbox-only: the simulator's pre-key count message failing"),
    Accepted("standin_words", ("*",), "'error storing sender keys'",
             "sandbox-only: the simulator's sender-key message failing"),
)


# Stand-in versions that no registry publishes, and why they exist all the same.
UNPUBLISHED_STANDINS: dict[str, str] = {
    "7.0.0": "the sandbox's loadable upgrade past a version the simulator refuses with 405 (an ESM package "
             "without an import-only exports map, which require() loads on node >= 20.19); no 7.0.0 is "
             "published yet, and the 7.0 candidates share its package.json shape",
}


@dataclass
class Release:
    spec: str
    root: Path  # the unpacked `package/` directory

    @cached_property
    def package(self) -> dict[str, Any]:
        return json.loads((self.root / "package.json").read_text())

    @property
    def name(self) -> str:
        return self.package["name"]

    @property
    def version(self) -> str:
        return self.package["version"]

    @cached_property
    def lib_js(self) -> str:
        """Every lib/**/*.js of the release, joined (where Baileys' log lines and errors are)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.root / "lib").rglob("*.js")))

    def read(self, rel: str) -> str:
        p = self.root / rel
        return p.read_text() if p.is_file() else ""

    def find_dts(self, needle: str) -> str:
        """The text of the first lib/**/*.d.ts holding `needle` ('' when none)."""
        for p in sorted((self.root / "lib").rglob("*.d.ts")):
            text = p.read_text(errors="replace")
            if needle in text:
                return text
        return ""


def unpack(tarball: Path, dest: Path, spec: str = "") -> Release:
    """Unpack an npm tarball (paths inside `dest` only, no links or devices) and return its package."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="data")
    root = dest / "package"
    if not (root / "package.json").is_file():
        raise ValueError(f"{tarball.name}: no package/package.json inside")
    return Release(spec or tarball.name, root)


# -- what the lab believes, read from where each belief lives ------------------------------------------
def standin_disconnect_reason() -> dict[str, int]:
    text = (STANDIN / "core" / "socket.js").read_text()
    body = re.search(r"const DisconnectReason = \{(.*?)\}", text, re.S)
    if not body:
        raise ValueError("vendor/core/socket.js: no DisconnectReason object")
    return {k: int(v) for k, v in re.findall(r"(\w+):\s*(\d+)", body.group(1))}


def release_disconnect_reason(rel: Release) -> dict[str, int]:
    text = rel.find_dts("enum DisconnectReason")
    body = re.search(r"enum DisconnectReason \{(.*?)\}", text, re.S)
    if not body:
        return {}
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body.group(1))}


def _compare(what: str, ours: dict[str, int], real: dict[str, int]) -> list[str]:
    out = [f"{what}: {k} = {ours[k]}, the release says {real[k]}" for k in real if k in ours and ours[k] != real[k]]
    out += [f"{what}: lacks {k} (= {real[k]} in the release)" for k in real if k not in ours]
    out += [f"{what}: has {k} = {ours[k]}, which the release does not name" for k in ours if k not in real]
    return out


def check_disconnect_reason(rel: Release) -> list[str]:
    from waops.rules import CODES
    from waops_lab.sandbox import codes

    real = release_disconnect_reason(rel)
    if not real:
        return ["the release declares no DisconnectReason enum in lib/**/*.d.ts"]
    out = _compare("stand-in DisconnectReason", standin_disconnect_reason(), real)
    out += _compare("simulator DISCONNECT_REASON", codes.DISCONNECT_REASON, real)
    out += [f"simulator: {c} is kept outside the enum, but the release names it" for c in codes.OUTSIDE_ENUM
            if c in real.values()]
    out += [f"classifier: no code rule for {v} ({k})" for k, v in real.items() if v not in CODES]
    return out


def looks_for(pattern: str, literal: str) -> bool:
    """A rule looks for its literal when its pattern matches it, or, for a message Baileys builds from a
    template (`resyncing ${name} from v${version}`), when the literal's words stand in the pattern."""
    if re.search(pattern, literal, re.IGNORECASE):
        return True
    words = literal.strip().lower()
    return bool(words) and words in re.sub(r"\\(.)", r"\1", pattern).lower()


def _literals(rule: Any) -> tuple[str, ...]:
    lit = getattr(rule, "literal", None)
    if lit is None:
        return ()
    return (lit,) if isinstance(lit, str) else tuple(lit)


def check_log_rules(rel: Release, rules: tuple[Any, ...] | None = None) -> list[str]:
    if rules is None:
        from waops.rules import LOG_RULES as rules
    out = []
    for r in rules:
        origin = getattr(r, "origin", "unmarked")
        lits = _literals(r)
        if origin not in ORIGINS:
            out.append(f"rule {r.name}: origin {origin!r} (say where its text comes from: {', '.join(ORIGINS)})")
            continue
        if origin != "baileys":
            if lits:
                out.append(f"rule {r.name}: a literal, but its origin is {origin}, not baileys")
            continue
        if not lits:
            out.append(f"rule {r.name}: origin baileys without the literal it expects in lib/*.js")
        for lit in lits:
            if lit not in rel.lib_js:
                out.append(f"rule {r.name}: {lit!r} is not in lib/*.js")
            if not looks_for(r.pattern, lit):
                out.append(f"rule {r.name}: its pattern does not match its own literal {lit!r}")
    return out


# The stand-in's words as Baileys: logger calls with a literal message, Boom errors, and the one line
# whose words depend on the major version.
_LOG_CALL = re.compile(r"logger\.(?:trace|debug|info|warn|error)\((?:[^()]|\([^()]*\))*?'([^'\n]+)'\)")
_LOG_TEMPLATE = re.compile(r"logger\.(?:trace|debug|info|warn|error)\(`([^`]+)`\)")
_BOOM = re.compile(r"new Boom\((?:msg \|\| )?'([^']+)'|new Boom\(`([^`$]+)")
_BOOM_OR = re.compile(r"new Boom\(\w+(?:\.\w+)* \|\| '([^']+)'")


def standin_words(version: str) -> list[str]:
    text = (STANDIN / "core" / "socket.js").read_text()
    words = set(_LOG_CALL.findall(text))
    for tpl in _LOG_TEMPLATE.findall(text):
        words.update(p.strip() for p in re.split(r"\$\{[^}]*\}", tpl) if p.strip())
    for a, b in _BOOM.findall(text):
        words.add((a or b).split(" (")[0].strip())
    words.update(_BOOM_OR.findall(text))
    table = re.search(r"const PREKEYS_UPLOADED = \{(.*?)\}", text, re.S)
    if table:
        by_major = {int(k): v for k, v in re.findall(r"(\d+):\s*'([^']+)'", table.group(1))}
        major = min(max(int(version.split(".")[0]), min(by_major)), max(by_major))
        words.add(by_major[major])
    return sorted(words)


def check_standin_words(rel: Release) -> list[str]:
    return [f"stand-in writes {w!r}, not in the release's lib/*.js" for w in standin_words(rel.version)
            if w not in rel.lib_js]


# -- auth files -------------------------------------------------------------------------------------------
_KEY_IDS = ["12", "15550100001.0", "15550100001:3@s.whatsapp.net", "1203630@g.us::15550100001::0",
            "AAAA/bbbb+cc==", "a:b/c:d", "lid:12@lid"]


def _node(script: str, *args: str) -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    res = subprocess.run([node, "-e", script, *args], capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"node: {(res.stderr.strip().splitlines() or ['failed'])[-1]}")
    return res.stdout


def release_fix_file_name(rel: Release) -> str | None:
    """The source of the release's fixFileName arrow function (None when it has none)."""
    text = rel.read("lib/Utils/use-multi-file-auth-state.js")
    m = re.search(r"const fixFileName = (\(file\) => .*?);\n", text)
    return m.group(1) if m else None


def release_key_types(rel: Release) -> list[str]:
    text = rel.find_dts("type SignalDataTypeMap")
    body = re.search(r"type SignalDataTypeMap = \{(.*?)\n\};", text, re.S)
    if not body:
        return []
    return re.findall(r"^\s{4}'?([a-z][a-z-]*)'?\s*:", body.group(1), re.M)


def check_auth_files(rel: Release) -> list[str]:
    out = []
    real_src = release_fix_file_name(rel)
    module = rel.read("lib/Utils/use-multi-file-auth-state.js")
    if real_src is None:
        return ["lib/Utils/use-multi-file-auth-state.js has no fixFileName: the file naming changed"]
    script = (
        "const real = " + real_src + ";\n"
        "const { fixFileName } = require(process.argv[1]);\n"
        "const ids = JSON.parse(process.argv[2]);\n"
        "console.log(JSON.stringify(ids.map((id) => [real(id), fixFileName(id)])))"
    )
    names = [f"session-{i}.json" for i in _KEY_IDS] + [f"sender-key-{i}.json" for i in _KEY_IDS]
    for want, got in json.loads(_node(script, str(STANDIN / "core" / "auth.js"), json.dumps(names))):
        if want != got:
            out.append(f"stand-in names a key file {got!r}, the release {want!r}")
    standin = (STANDIN / "core" / "auth.js").read_text()
    for template in ("'creds.json'", "`${type}-${id}.json`", "`${category}-${id}.json`"):
        if template not in module:
            out.append(f"useMultiFileAuthState no longer names files {template}")
        elif template not in standin:
            out.append(f"stand-in does not name files {template} as the release does")
    types = release_key_types(rel)
    if not types:
        out.append("no SignalDataTypeMap in lib/**/*.d.ts: the key types changed")
    for t in types:
        if t not in keys.KEY_TYPES:
            out.append(f"host agent does not know key type {t!r} (counted as 'other')")
        elif keys.key_type(f"{t}-{_KEY_IDS[2].replace(':', '-')}.json") != t:
            out.append(f"host agent files {t}-<id>.json under another type")
    if "useSqliteAuthState" in rel.lib_js:
        out.append("the release has useSqliteAuthState; the host agent reads only files and PostgreSQL stores")
    return out


# -- the keep-alive agent against the release's types --------------------------------------------------------
def check_keepalive_types(rel: Release, cache: Path) -> list[str]:
    tsc = fb.tsc_path(cache)
    node = shutil.which("node")
    if node is None or not tsc.is_file():
        return [f"cannot type-check: {'node' if node is None else tsc} is missing (run fetch_baileys.py)"]
    with tempfile.TemporaryDirectory(prefix="baileys-tsc-") as tmp:
        w = Path(tmp)
        shutil.copytree(AGENT_JS, w / "agent")
        shutil.copy(TSC_DIR / "tsconfig.json", w / "tsconfig.json")
        shutil.copy(TSC_DIR / "esm_bot.mjs", w / "esm_bot.mjs")
        nm = w / "node_modules"
        (nm / "@hapi" / "boom").mkdir(parents=True)
        (nm / "@types").mkdir()
        (nm / "baileys").symlink_to(rel.root, target_is_directory=True)  # either package name, as bots alias it
        (nm / "waops-keepalive").symlink_to(w / "agent", target_is_directory=True)
        (nm / "@types" / "node").symlink_to(fb.tools_dir(cache) / "node_modules" / "@types" / "node")
        shutil.copy(TSC_DIR / "boom.d.ts", nm / "@hapi" / "boom" / "index.d.ts")
        (nm / "@hapi" / "boom" / "package.json").write_text('{"name": "@hapi/boom", "types": "index.d.ts"}\n')
        res = subprocess.run([node, str(tsc), "-p", str(w / "tsconfig.json")], cwd=w, capture_output=True,
                             text=True, timeout=TSC_TIMEOUT_S)
    if res.returncode == 0:
        return []
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "error TS" in ln]
    return [f"tsc: {ln}" for ln in lines] or [f"tsc exited {res.returncode}: {res.stdout.strip()[-300:]}"]


# -- package.json ---------------------------------------------------------------------------------------------
def node_min_major() -> int:
    defaults = yaml.safe_load((REPO / "roles" / "waops_node" / "defaults" / "main.yml").read_text())
    return int(defaults["waops_node_min_major"])


def check_package(rel: Release) -> list[str]:
    from waops_host.versions import module_system

    out = []
    pkg = rel.package
    real_type = "module" if pkg.get("type") == "module" else "commonjs"
    believed = module_system(rel.version)
    if believed != real_type:
        out.append(f"waops_host.versions says {believed}, package.json says {real_type}")
    engines = (pkg.get("engines") or {}).get("node")
    if engines:
        m = re.search(r">=\s*v?(\d+)", engines)
        if not m:
            out.append(f"engines.node {engines!r}: not a lower bound waops understands")
        elif int(m.group(1)) > node_min_major():
            out.append(f"engines.node {engines!r} needs more than waops_node_min_major {node_min_major()}")
    standin_pkg = STANDIN / f"baileys-{rel.version}" / "package.json"
    if standin_pkg.is_file():
        ours = json.loads(standin_pkg.read_text())
        for key in ("type", "exports", "engines", "main"):
            if ours.get(key) != pkg.get(key):
                out.append(f"stand-in {key}: {ours.get(key)!r}, the release: {pkg.get(key)!r}")
    return out


# -- running the checks -----------------------------------------------------------------------------------------
CHECKS: dict[str, Callable[..., list[str]]] = {
    "disconnect_reason": check_disconnect_reason,
    "log_rules": check_log_rules,
    "standin_words": check_standin_words,
    "auth_files": check_auth_files,
    "keepalive_types": check_keepalive_types,
    "package": check_package,
}


@dataclass
class Result:
    check: str
    differences: list[str] = field(default_factory=list)  # not accepted: the check fails
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (difference, reason)

    @property
    def ok(self) -> bool:
        return not self.differences


def accepted_reason(check: str, version: str, difference: str) -> str | None:
    for a in ACCEPTED:
        if a.check == check and a.contains in difference and any(fnmatch.fnmatch(version, v) for v in a.versions):
            return a.reason
    return None


def run_check(check: str, rel: Release, cache: Path) -> Result:
    fn = CHECKS[check]
    diffs = fn(rel, cache) if check == "keepalive_types" else fn(rel)
    res = Result(check)
    for d in diffs:
        reason = accepted_reason(check, rel.version, d)
        if reason is None:
            res.differences.append(d)
        else:
            res.accepted.append((d, reason))
    return res
