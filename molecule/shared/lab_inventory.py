#!/usr/bin/env python3
"""Ansible script inventory for molecule: the inventory `waops lab up` wrote for lab $WAOPS_LAB_NAME.

molecule links inventory sources when a scenario starts, before `create` has made the lab, so it links
this script (which always exists) and the script reads the lab's inventory at run time (empty before)."""

import json
import os
import sys
from pathlib import Path


def main() -> int:
    if "--host" in sys.argv:
        print("{}")
        return 0
    root = Path(os.environ.get("WAOPS_LAB_DIR", "/var/tmp/waops-lab"))
    path = root / os.environ.get("WAOPS_LAB_NAME", "default") / "inventory" / "hosts.yml"
    out: dict = {"_meta": {"hostvars": {}}}
    if path.exists():
        doc = json.loads(path.read_text())["all"]  # the lab writes JSON (valid YAML)
        out["all"] = {"vars": doc.get("vars", {}), "children": sorted(doc.get("children", {}))}
        for group, body in doc.get("children", {}).items():
            hosts = body.get("hosts", {})
            out[group] = {"hosts": sorted(hosts)}
            out["_meta"]["hostvars"].update(hosts)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
