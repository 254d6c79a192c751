"""Library version ordering ("6.7.18" < "7.0.0-rc.9" < "7.0.0"): the 405 check, pins and the simulator."""

from __future__ import annotations

import re

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


def module_system(version: str) -> str:
    """"commonjs" or "module" for a release of baileys / @whiskeysockets/baileys."""
    if version in COMMONJS_ABOVE_BOUNDARY or not older_than(LAST_COMMONJS, version):
        return "commonjs"
    return "module"
