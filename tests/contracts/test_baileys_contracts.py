"""The lab against real Baileys: every pinned release (baileys_releases.txt) x every check of
tests/contracts/baileys.py, and proof that the checks catch drift (doctored tarballs and stand-ins).

The releases come from the cache fetch_baileys.py fills (.ci/run runs it first). When the cache is
incomplete the tests fetch it themselves; they skip only when that fails because the npm registry cannot
be reached, and never when WAOPS_BAILEYS_REQUIRED=1 (CI).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.contracts import baileys as bc
from tests.contracts import fetch_baileys as fb
from waops.rules import LOG_RULES
from waops_host.versions import known_bad, module_system

PINS = fb.read_pins()
BASE = "baileys@6.7.18"  # the release the doctored copies start from (CommonJS, the lab's expected one)


def _registry_reachable() -> str | None:
    """Why the npm registry cannot be reached, or None."""
    if not shutil.which("npm"):
        return "npm is not installed"
    try:
        res = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "npm ping timed out"
    return None if res.returncode == 0 else fb.npm_error(res.stderr)


@pytest.fixture(scope="session")
def cache() -> Path:
    where = fb.cache_dir()
    if not fb.missing(where, PINS):
        return where
    try:
        fb.fetch(where, PINS, log=lambda _m: None)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        why = _registry_reachable()
        if why is None or os.environ.get("WAOPS_BAILEYS_REQUIRED") == "1":
            pytest.fail(f"cannot fill the Baileys cache {where}: {e}")
        pytest.skip(f"no Baileys cache in {where} and the npm registry is unreachable ({why}); "
                    "run tests/contracts/fetch_baileys.py where it is")
    assert not fb.missing(where, PINS)
    return where


@pytest.fixture(scope="session")
def releases(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bc.Release]:
    root = tmp_path_factory.mktemp("baileys")
    return {s: bc.unpack(fb.tarball_path(s, cache), root / fb.tarball_name(s), s) for s in PINS}


@pytest.mark.parametrize("check", list(bc.CHECKS))
@pytest.mark.parametrize("spec", PINS)
def test_release_agrees_with_the_lab(spec: str, check: str, releases: dict[str, bc.Release], cache: Path) -> None:
    rel = releases[spec]
    assert f"{rel.name}@{rel.version}" == spec  # the tarball is the release it claims to be
    res = bc.run_check(check, rel, cache)
    assert res.ok, f"{spec} {check} differs from the lab:\n" + "\n".join(res.differences)


def test_every_accepted_difference_still_occurs(releases: dict[str, bc.Release], cache: Path) -> None:
    """An allow-list entry no pinned release needs any more is removed, not kept as a blind spot."""
    used: set[int] = set()
    for rel in releases.values():
        for check in {a.check for a in bc.ACCEPTED}:
            for diff, _reason in bc.run_check(check, rel, cache).accepted:
                used |= {i for i, a in enumerate(bc.ACCEPTED) if a.check == check and a.contains in diff}
    stale = [f"{a.check}: {a.contains}" for i, a in enumerate(bc.ACCEPTED) if i not in used]
    assert not stale, f"accepted differences no pinned release shows: {stale}"


def test_version_table_names_real_releases(cache: Path) -> None:
    """The known-bad list, the expected version and the stand-ins' versions are published releases, and
    the expected one loads in a CommonJS bot."""
    import yaml

    published = set()
    for name in fb.PACKAGE_NAMES:
        published |= set(json.loads(fb.versions_path(name, cache).read_text()))
    defaults = yaml.safe_load((bc.REPO / "roles" / "waops_host" / "defaults" / "main.yml").read_text())
    expected = defaults["waops_host_library_expected"]
    assert expected in published
    assert module_system(expected) == "commonjs"
    unknown = [v for v in known_bad() if v not in published]  # the list both roles read
    assert not unknown, f"known-bad versions no registry publishes: {unknown}"
    standins = [p.name.removeprefix("baileys-") for p in bc.STANDIN.glob("baileys-*")]
    assert expected in standins
    unpublished = sorted(v for v in standins if v not in published)
    assert unpublished == sorted(bc.UNPUBLISHED_STANDINS), "stand-ins of unpublished versions need a reason"


# -- drift: a doctored release or stand-in must be reported ------------------------------------------------
def doctored(cache: Path, dest: Path, edits: dict[str, Callable[[str], str]]) -> bc.Release:
    """Repack BASE's tarball with `edits` (glob of member paths -> text change) and unpack the result,
    the way a renamed message or a changed enum would arrive in a new release."""
    src = fb.tarball_path(BASE, cache)
    out = dest / "doctored.tgz"
    changed: set[str] = set()
    with tarfile.open(src) as tin, tarfile.open(out, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            for pattern, edit in edits.items():
                if data is not None and fnmatch.fnmatch(m.name, pattern):
                    new = edit(data.decode()).encode()
                    if new != data:
                        changed.add(pattern)
                    data = new
            if data is not None:
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
            else:
                tout.addfile(m)
    assert changed == set(edits), f"edits that changed nothing: {set(edits) - changed}"
    return bc.unpack(out, dest / "x", f"doctored {BASE}")


def _sub(old: str, new: str) -> Callable[[str], str]:
    return lambda text: text.replace(old, new)


def test_a_changed_disconnect_reason_is_reported(cache: Path, tmp_path: Path) -> None:
    rel = doctored(cache, tmp_path, {"package/lib/Types/index.d.ts": _sub("loggedOut = 401", "loggedOut = 419")})
    diffs = bc.check_disconnect_reason(rel)
    assert "stand-in DisconnectReason: loggedOut = 401, the release says 419" in diffs
    assert "simulator DISCONNECT_REASON: loggedOut = 401, the release says 419" in diffs
    assert "classifier: no code rule for 419 (loggedOut)" in diffs


def test_a_renamed_log_message_is_reported(cache: Path, tmp_path: Path) -> None:
    rel = doctored(cache, tmp_path, {"package/lib/Socket/*.js": _sub("'opened connection to WA'",
                                                                     "'opened connection to WhatsApp'")})
    assert bc.check_log_rules(rel) == ["rule opened: 'opened connection to WA' is not in lib/*.js"]
    assert "stand-in writes 'opened connection to WA', not in the release's lib/*.js" in bc.check_standin_words(rel)


def test_an_unmarked_or_wrong_rule_is_reported(releases: dict[str, bc.Release]) -> None:
    rel = releases[BASE]
    # Rules as the check reads them (name, pattern, origin, literal), whatever else a Rule carries.
    rules = (
        *LOG_RULES,
        SimpleNamespace(name="new_rule", pattern=r"something new"),  # nobody said where its text comes from
        SimpleNamespace(name="typo", pattern=r"opened connexion", origin="baileys", literal="opened connexion to WA"),
        SimpleNamespace(name="mismatch", pattern=r"closed for good", origin="baileys", literal="connection closed"),
        SimpleNamespace(name="misfiled", pattern=r"Bad MAC", origin="libsignal", literal="Bad MAC"),
    )
    assert bc.check_log_rules(rel, rules) == [
        "rule new_rule: origin 'unmarked' (say where its text comes from: " + ", ".join(bc.ORIGINS) + ")",
        "rule typo: 'opened connexion to WA' is not in lib/*.js",
        "rule mismatch: its pattern does not match its own literal 'connection closed'",
        "rule misfiled: a literal, but its origin is libsignal, not baileys",
    ]


def test_a_changed_auth_file_naming_is_reported(cache: Path, tmp_path: Path) -> None:
    rel = doctored(cache, tmp_path, {
        "package/lib/Utils/use-multi-file-auth-state.js": _sub(".replace(/:/g, '-')", ".replace(/:/g, '_')"),
        "package/lib/Types/Auth.d.ts": _sub("'pre-key': KeyPair;", "'pre-key': KeyPair;\n    'kyber-key': KeyPair;"),
    })
    diffs = bc.check_auth_files(rel)
    assert "stand-in names a key file 'session-15550100001-3@s.whatsapp.net.json', the release " \
           "'session-15550100001_3@s.whatsapp.net.json'" in diffs
    assert "host agent does not know key type 'kyber-key' (counted as 'other')" in diffs


def test_a_socket_method_the_agent_uses_disappearing_is_reported(cache: Path, tmp_path: Path) -> None:
    rel = doctored(cache, tmp_path, {"package/lib/**/*.d.ts": lambda t: re.sub(r"\bsendPresenceUpdate\b",
                                                                                "sendPresence", t)})
    diffs = bc.check_keepalive_types(rel, cache)
    assert any("agent/index.js" in d and "'sendPresenceUpdate' does not exist" in d for d in diffs), diffs


def test_a_module_system_change_is_reported(cache: Path, tmp_path: Path) -> None:
    def esm(text: str) -> str:
        pkg = json.loads(text)
        pkg["type"] = "module"
        pkg["engines"] = {"node": ">=22.0.0"}
        return json.dumps(pkg)

    diffs = bc.check_package(doctored(cache, tmp_path, {"package/package.json": esm}))
    assert "waops_host.versions says commonjs, package.json says module" in diffs
    assert "engines.node '>=22.0.0' needs more than waops_node_min_major 20" in diffs
    assert "stand-in type: None, the release: 'module'" in diffs


def test_a_drifted_stand_in_is_reported(releases: dict[str, bc.Release], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = tmp_path / "vendor"
    shutil.copytree(bc.STANDIN, vendor, ignore=shutil.ignore_patterns("node_modules"))
    sock = vendor / "core" / "socket.js"
    sock.write_text(sock.read_text().replace("badSession: 500,", "badSession: 501,")
                    .replace("'connected to WA'", "'connected to WhatsApp'"))
    monkeypatch.setattr(bc, "STANDIN", vendor)
    rel = releases[BASE]
    assert bc.check_disconnect_reason(rel) == ["stand-in DisconnectReason: badSession = 501, the release says 500"]
    words = bc.check_standin_words(rel)
    assert "stand-in writes 'connected to WhatsApp', not in the release's lib/*.js" in words
