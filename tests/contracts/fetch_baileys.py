"""Fill the cache the Baileys contract tests read: the pinned releases' tarballs (no dependencies), the
registry's version lists of both package names, and a pinned TypeScript compiler.

    python3 tests/contracts/fetch_baileys.py [--cache DIR]

Cache: --cache, else $WAOPS_BAILEYS_CACHE, else ~/.cache/waops/baileys. What is already there is kept, so
a second run makes no request for tarballs. Stdlib and `npm` only. Exit 0 when the cache is complete,
1 (one line on stderr) when something could not be fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PINS = Path(__file__).with_name("baileys_releases.txt")
PACKAGE_NAMES = ("baileys", "@whiskeysockets/baileys")
# The compiler that checks the keep-alive agent against each release's .d.ts, and node's own types.
TOOLS = {"typescript": "5.9.3", "@types/node": "20.19.43"}
NPM_TIMEOUT_S = 300


def cache_dir(override: str | None = None) -> Path:
    where = override or os.environ.get("WAOPS_BAILEYS_CACHE") or "~/.cache/waops/baileys"
    return Path(where).expanduser()


def read_pins(path: Path = PINS) -> list[str]:
    """npm specs (`name@version`), in file order; `#` starts a comment."""
    specs = []
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            specs.append(spec)
    return specs


def split_spec(spec: str) -> tuple[str, str]:
    name, _, version = spec.rpartition("@")
    if not name or not version:
        raise ValueError(f"not a name@version spec: {spec!r}")
    return name, version


def tarball_name(spec: str) -> str:
    """What `npm pack` calls the file: `@scope/name@1.0.0` -> `scope-name-1.0.0.tgz`."""
    name, version = split_spec(spec)
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def tarball_path(spec: str, cache: Path) -> Path:
    return cache / "tarballs" / tarball_name(spec)


def versions_path(name: str, cache: Path) -> Path:
    return cache / "registry" / f"{name.lstrip('@').replace('/', '-')}.versions.json"


def tools_dir(cache: Path) -> Path:
    return cache / "tools"


def tsc_path(cache: Path) -> Path:
    return tools_dir(cache) / "node_modules" / "typescript" / "bin" / "tsc"


def missing(cache: Path, specs: list[str]) -> list[str]:
    """What the cache lacks (empty: complete)."""
    lack = [tarball_name(s) for s in specs if not tarball_path(s, cache).is_file()]
    lack += [f"{n} versions" for n in PACKAGE_NAMES if not versions_path(n, cache).is_file()]
    for tool, version in TOOLS.items():
        pkg = tools_dir(cache) / "node_modules" / tool / "package.json"
        if not pkg.is_file() or json.loads(pkg.read_text()).get("version") != version:
            lack.append(f"{tool}@{version}")
    return lack


def _npm(args: list[str], cwd: Path) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    res = subprocess.run([npm, *args], cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"npm {' '.join(args)}: {npm_error(res.stderr)}")
    return res.stdout


def npm_error(stderr: str) -> str:
    """npm's own words for a failure, without its log-file trailer."""
    raw = [ln for ln in stderr.splitlines() if ln.startswith(("npm error", "npm ERR!"))] or stderr.splitlines()
    lines = [ln.removeprefix("npm error").removeprefix("npm ERR!").strip() for ln in raw]
    lines = [ln for ln in lines if ln and not ln.startswith(("A complete log", "Log files were not written"))]
    return "; ".join(lines[:2]) or "failed without a message"


def fetch(cache: Path, specs: list[str], log=print) -> None:
    (cache / "tarballs").mkdir(parents=True, exist_ok=True)
    (cache / "registry").mkdir(parents=True, exist_ok=True)
    for spec in specs:
        dest = tarball_path(spec, cache)
        if dest.is_file():
            continue
        log(f"npm pack {spec}")
        _npm(["pack", "--loglevel=error", "--pack-destination", str(dest.parent), spec], cwd=cache)
        if not dest.is_file():
            raise RuntimeError(f"npm pack {spec} did not leave {dest.name}")
    for name in PACKAGE_NAMES:
        dest = versions_path(name, cache)
        if not dest.is_file():
            log(f"npm view {name} versions")
            versions = json.loads(_npm(["view", name, "versions", "--json"], cwd=cache))
            tmp = dest.with_suffix(".tmp")
            tmp.write_text(json.dumps(versions))
            tmp.replace(dest)
    if any(t.startswith(tuple(TOOLS)) for t in missing(cache, [])):
        tools = tools_dir(cache)
        tools.mkdir(parents=True, exist_ok=True)
        if not (tools / "package.json").is_file():
            (tools / "package.json").write_text('{"private": true}\n')
        log("npm install " + " ".join(f"{t}@{v}" for t, v in TOOLS.items()))
        _npm(["install", "--no-audit", "--no-fund", "--save-exact", *(f"{t}@{v}" for t, v in TOOLS.items())],
             cwd=tools)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="cache directory (env WAOPS_BAILEYS_CACHE; default ~/.cache/waops/baileys)")
    args = ap.parse_args(argv)
    cache = cache_dir(args.cache)
    try:
        fetch(cache, read_pins())
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"fetch_baileys: {e}", file=sys.stderr)
        return 1
    lack = missing(cache, read_pins())
    if lack:
        print(f"fetch_baileys: still missing: {', '.join(lack)}", file=sys.stderr)
        return 1
    print(f"fetch_baileys: {len(read_pins())} releases and the tools in {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
