"""Backup members as streams: hashing writers and readers, the optional `age` layer, tar checks."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .base import MAX_MEMBER, AgentError

if TYPE_CHECKING:
    from .config import BotConfig


class HashWriter:
    """File-like sink that hashes and counts what passes through (tarfile writes in stream mode)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.h, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.h.update(data)
        self.size += len(data)
        return len(data)


class Sink:
    """Where a backup member's bytes go: a plain 0600 file, or `age` encrypting into one."""

    def __init__(self, path: str, recipient: str | None) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "wb")
        if recipient:
            age = shutil.which("age")
            if not age:
                self.file.close()
                raise AgentError("backup_age_recipient is set but `age` is not installed")
            self.proc = subprocess.Popen([age, "-r", recipient], stdin=subprocess.PIPE,
                                         stdout=self.file, stderr=subprocess.PIPE)
            assert self.proc.stdin is not None
            self.writer: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        else:
            self.writer = self.file  # type: ignore[assignment]
        self.hw = HashWriter(self.writer)

    def close(self) -> None:
        if self.proc:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            self.proc.stdin = None  # communicate() must not flush a closed pipe
            err = self.proc.communicate(timeout=120)[1]
            if self.proc.returncode != 0:
                raise AgentError(f"age failed: {err.decode('utf-8', 'replace').strip()[:300]}")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self, cause: BaseException) -> BaseException:
        """Stop everything; returns the error to raise (age's own message when age died first)."""
        err = b""
        if self.proc:
            with contextlib.suppress(Exception):
                if isinstance(cause, BrokenPipeError) and self.proc.stderr:
                    self.proc.wait(5)
                    err = self.proc.stderr.read()
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(Exception):
            self.file.close()
        if err:
            return AgentError(f"age failed: {err.decode('utf-8', 'replace').strip().splitlines()[0][:300]}")
        return cause


def _read_regular(path: str) -> bytes | None:
    """Read one auth file without following links; None when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > MAX_MEMBER:
            raise AgentError(f"{path}: {st.st_size} bytes is too big for an auth file")
        chunks = [os.read(fd, st.st_size + 1)]
        while len(chunks[-1]) and sum(map(len, chunks)) <= MAX_MEMBER:  # file grew while we read
            chunks.append(os.read(fd, 1 << 20))
        return b"".join(chunks)
    finally:
        os.close(fd)


def safe_member_name(name: str) -> str | None:
    """Why a tar member name would write outside the auth folder, or None when it is safe."""
    if not name or name.startswith("/") or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "absolute or malformed path (or a control character)"
    parts = [p for p in name.rstrip("/").split("/")]
    if any(p in ("", ".", "..") for p in parts):
        return "path with '..', '.' or empty part"
    return None


def check_member(ti: tarfile.TarInfo) -> str | None:
    bad = safe_member_name(ti.name)
    if bad:
        return f"{ti.name!r}: {bad}"
    if ti.issym() or ti.islnk():
        return f"{ti.name!r}: link to {ti.linkname!r}"
    if not (ti.isreg() or ti.isdir()):
        return f"{ti.name!r}: not a regular file or directory (device, fifo or special)"
    return None


@contextlib.contextmanager
def open_plain(cfg: BotConfig, path: str, encrypted: bool) -> Iterator[BinaryIO]:
    """The plaintext stream of a backup member: the file, or `age -d` reading it."""
    if not encrypted:
        with open(path, "rb") as f:
            yield f
        return
    ident = cfg.age_identity_file
    if not ident or not os.path.exists(ident):
        raise AgentError("backup is encrypted and backup_age_identity_file is not set or missing")
    age = shutil.which("age")
    if not age:
        raise AgentError("backup is encrypted but `age` is not installed")
    p = subprocess.Popen([age, "-d", "-i", ident, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    try:
        yield p.stdout  # type: ignore[misc]
        p.stdout.read()
    finally:
        err = p.communicate(timeout=120)[1]
        if p.returncode != 0:
            raise AgentError(f"age decrypt failed: {err.decode('utf-8', 'replace').strip()[:300]}")


class HashReader:
    def __init__(self, src: BinaryIO) -> None:
        self.src, self.h, self.size = src, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.h.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def iter_tar(stream: HashReader, on_file: Callable[[tarfile.TarInfo, bytes | None], None]) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for ti in tar:
            data = None
            if ti.isreg():
                if ti.size > MAX_MEMBER:
                    raise AgentError(f"{ti.name!r}: member too big")
                f = tar.extractfile(ti)
                data = f.read() if f else b""
            on_file(ti, data)
    stream.drain()


def iter_lines(src: Any) -> Iterator[bytes]:
    buf = b""
    while chunk := src.read(1 << 16):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from (ln for ln in lines if ln)
    if buf:
        yield buf
