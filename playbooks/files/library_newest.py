#!/usr/bin/env python3
"""Print the newest version of a bot's library worth pinning, or nothing.

Used by pin_library.yml with `waops_library_version=newest` (405: WhatsApp refuses the version the bot
runs, and the expected one is that same version). Offered versions are the copies vendored in the
release (`vendor/<package>-<version>/`, no registry needed) or else the npm registry's list. Known-bad
versions and versions not newer than the installed one are left out; a stable release beats any
pre-release. Stdlib only: it runs on the bot host.

usage: library_newest.py RELEASE_DIR PACKAGE INSTALLED KNOWN_BAD_JSON
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def key(version: str) -> tuple:
    m = VERSION.match(version)
    if not m:
        return (-1,)
    core = tuple(int(x) for x in m.group(1, 2, 3))
    if m.group(4) is None:
        return (*core, 1, ())  # a release sorts after its pre-releases
    return (*core, 0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split(".")))


def offered(release: str, package: str) -> list[str]:
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


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    release, package, installed, known_bad = argv[1], argv[2], argv[3], set(json.loads(argv[4] or "[]"))
    floor = key(installed) if VERSION.match(installed) else (-1,)
    candidates = [v for v in offered(release, package) if VERSION.match(v) and v not in known_bad and key(v) > floor]
    stable = [v for v in candidates if "-" not in v]
    if candidates:
        print(max(stable or candidates, key=key))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
