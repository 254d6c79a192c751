"""Library version ordering ("6.7.18" < "7.0.0-rc.9" < "7.0.0"): the one owner, for the controller's 405
check and pins, the simulator, and (on the bot host) the newest version worth pinning.

`python3 -m waops_host.versions RELEASE_DIR PACKAGE INSTALLED KNOWN_BAD_JSON` prints the newest version of
a bot's library worth pinning, or nothing (pin_library.yml with `waops_library_version=newest`). Offered
versions are the copies vendored in the release (`vendor/<package>-<version>/`, no registry needed) or else
the npm registry's list. Known-bad versions and versions not newer than the installed one are left out; a
stable release beats any pre-release.
"""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


def version_key(version: str) -> tuple:
    m = _VERSION.match(version.strip())
    if not m:
        raise ValueError(f"not a version: {version!r}")
    core = tuple(int(x) for x in m.group(1, 2, 3))
    pre = m.group(4)
    if pre is None:
        return (*core, 1, ())  # a release sorts after all of its pre-releases
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (*core, 0, parts)


def older_than(version: str, minimum: str) -> bool:
    try:
        return version_key(version) < version_key(minimum)
    except ValueError:
        return True  # an unparseable client version is not accepted once a minimum is set


def bump_patch(version: str) -> str:
    """The smallest plain release above `version` (for client_outdated without an explicit minimum)."""
    major, minor, patch = version_key(version)[:3]
    return f"{major}.{minor}.{patch + 1}"


# The module-system boundary (what a CommonJS bot's `require` meets): 6.7.18 is the last CommonJS
# release; 6.7.19+ and 7.x ship `"type": "module"`.
LAST_COMMONJS = "6.7.18"
# Numbered above the boundary, CommonJS all the same: 6.17.16 (npm's `latest` tag of both package names)
# is 6.7.16's code republished under a mistyped number.
COMMONJS_ABOVE_BOUNDARY = frozenset({"6.17.16"})


def known_bad() -> list[str]:
    """Library versions known to break (405 outages, hourly badSession, 440 at login): known_bad.json beside
    this module, the one list both roles' defaults read. 6.17.16 is 6.7.16 republished under a higher
    number (npm's `latest`): "newest" must never pick it."""
    data = pkgutil.get_data(__package__ or "waops_host", "known_bad.json")  # a directory or a zip alike
    return [str(v) for v in json.loads(data or b"[]")]


def module_system(version: str) -> str:
    """"commonjs" or "module" for a release of baileys / @whiskeysockets/baileys."""
    if version in COMMONJS_ABOVE_BOUNDARY or not older_than(LAST_COMMONJS, version):
        return "commonjs"
    return "module"


def offered(release: str, package: str) -> list[str]:
    """Versions of `package` the release vendors, else the ones the npm registry lists."""
    slug = package.replace("/", "-").replace("@", "")
    vendor = os.path.join(release, "vendor")
    if os.path.isdir(vendor):
        found = [
            name[len(slug) + 1 :]
            for name in os.listdir(vendor)
            if name.startswith(slug + "-") and os.path.isfile(os.path.join(vendor, name, "package.json"))
        ]
        if found:
            return found
    p = subprocess.run(
        ["npm", "view", package, "versions", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        versions = json.loads(p.stdout or "[]")
    except ValueError:
        return []
    return [versions] if isinstance(versions, str) else [v for v in versions if isinstance(v, str)]


def newest(candidates: list[str], installed: str, known_bad: set[str]) -> str | None:
    """The newest plain version above `installed` that is not known bad; a release beats any pre-release."""
    floor = _key_or_none(installed)
    keep = [v for v in candidates if _PLAIN.match(v) and v not in known_bad
            and (floor is None or version_key(v) > floor)]
    stable = [v for v in keep if "-" not in v]
    return max(stable or keep, key=version_key) if keep else None


_PLAIN = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")  # what npm can pin exactly (no "v", no build)


def _key_or_none(version: str) -> tuple | None:
    return version_key(version) if _PLAIN.match(version) else None


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print("usage: python3 -m waops_host.versions RELEASE_DIR PACKAGE INSTALLED KNOWN_BAD_JSON", file=sys.stderr)
        return 2
    release, package, installed, known_bad = argv[1], argv[2], argv[3], set(json.loads(argv[4] or "[]"))
    best = newest(offered(release, package), installed, known_bad)
    if best:
        print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
