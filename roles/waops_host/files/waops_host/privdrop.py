"""Privilege separation: bot-owned paths are only touched by a forked child running as the bot user."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .base import EXIT_FAILED, MAX_CHILD_REPLY, AgentError, open_regular
from .window import tail_of

if TYPE_CHECKING:
    from .config import BotConfig


# Root never opens a path below the bot user's directories: a child process drops to the bot's uid and
# gids (as OpenSSH's privilege separation does) and streams data to or from root over a pipe, so the bot
# user can never make root read or write anything it could not read or write itself.


def bot_ids(cfg: BotConfig) -> tuple[int, int] | None:
    """(uid, gid) the child runs as; None when we are not root (we hold no more rights than that)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(cfg.user)
    except KeyError:  # not provisioned yet: whatever is there is looked at with no rights at all
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            return 65534, 65534
    if pw.pw_uid == 0:
        return None  # a bot run as root has nothing to gain from tricking us
    return pw.pw_uid, pw.pw_gid


class BotChild:
    """`fn(stream, *args)` run in a child as the bot user; `stream` is the child's end of a pipe ("out":
    the child writes, root reads `self.stream`; "in": root writes) or None. `finish()` returns fn's
    JSON-able result or raises its error as an AgentError."""

    def __init__(self, cfg: BotConfig, fn: Callable[..., Any], *args: Any, stream: str | None = None) -> None:
        ids = bot_ids(cfg)
        res_r, res_w = os.pipe()
        data = os.pipe() if stream else None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                mine = data[1] if stream == "out" else data[0] if data else -1
                keep = {res_w, mine}
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
                    if fd > 2 and fd not in keep:
                        with contextlib.suppress(OSError):
                            os.close(fd)  # the lock, backup files: root's fds stay with root
                if ids:
                    os.setgroups([])
                    os.setresgid(ids[1], ids[1], ids[1])
                    os.setresuid(ids[0], ids[0], ids[0])
                os.umask(0o077)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                f = os.fdopen(mine, "wb" if stream == "out" else "rb") if data else None
                try:
                    reply: dict[str, Any] = {"ok": True, "result": fn(f, *args)}
                finally:
                    if f:
                        with contextlib.suppress(OSError):
                            f.close()
            except BaseException as e:
                reply = _failure(e)
            try:
                with os.fdopen(res_w, "wb") as out:
                    out.write(json.dumps(reply).encode())
            except BaseException:
                code = 1
            os._exit(code)
        os.close(res_w)
        self.pid, self.result_fd = pid, res_r
        self.stream: BinaryIO | None = None
        if data:
            os.close(data[1] if stream == "out" else data[0])
            self.stream = os.fdopen(data[0] if stream == "out" else data[1], "rb" if stream == "out" else "wb")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def finish(self) -> Any:
        if self.stream:
            with contextlib.suppress(OSError):
                self.stream.close()
        with os.fdopen(self.result_fd, "rb") as f:
            raw = f.read(MAX_CHILD_REPLY + 1)
        os.waitpid(self.pid, 0)
        try:
            reply = json.loads(raw) if len(raw) <= MAX_CHILD_REPLY else None
        except ValueError:
            reply = None
        return _unpack(reply)


def _failure(e: BaseException) -> dict[str, Any]:
    """(in the child) The reply for fn's error, as root will raise it again."""
    if isinstance(e, AgentError):
        return {"ok": False, "error": str(e), "code": e.code}
    if isinstance(e, OSError):
        return {"ok": False, "error": f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")}
    return {"ok": False, "error": f"{e.__class__.__name__}: {e}"[:500]}


def _unpack(reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise AgentError("the bot-user child gave no answer (killed?)")
    if not reply.get("ok"):
        raise AgentError(str(reply.get("error")), int(reply.get("code") or EXIT_FAILED))
    return reply.get("result")


# Replies of reads done ahead in one child (`prefetch`), keyed by (cfg, fn, args): `as_bot` takes a reply
# from here instead of forking a child of its own. Each is used once.
_PREFETCHED: dict[tuple[Any, ...], Any] = {}

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def _child_many(_: None, calls: list[Call]) -> list[dict[str, Any]]:
    """(as the bot) Each call's reply, as a child of its own would have given it."""
    replies = []
    for fn, args in calls:
        try:
            replies.append({"ok": True, "result": fn(None, *args)})
        except Exception as e:
            replies.append(_failure(e))
    return replies


@contextlib.contextmanager
def prefetch(cfg: BotConfig, calls: list[Call]) -> Iterator[None]:
    """Run `as_bot(cfg, fn, *args)` of every call at once in ONE bot-user child (a fork, a privilege drop
    and a reply per bot instead of one per read); inside the block, those `as_bot` calls get their reply
    from it. When that child fails as a whole, nothing is prefetched and each call forks its own child,
    as it would have without this."""
    keys = [(cfg, fn, args) for fn, args in calls]
    try:
        replies = as_bot(cfg, _child_many, calls)
    except AgentError:
        replies = None
    if isinstance(replies, list) and len(replies) == len(keys):
        _PREFETCHED.update(zip(keys, replies, strict=True))
    try:
        yield
    finally:
        for key in keys:
            _PREFETCHED.pop(key, None)


def as_bot(cfg: BotConfig, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(None, *args) as the bot user; its JSON-able result."""
    reply: Any = _NOT_PREFETCHED
    if _PREFETCHED:
        with contextlib.suppress(TypeError):  # an unhashable argument: never prefetched
            reply = _PREFETCHED.pop((cfg, fn, args), _NOT_PREFETCHED)
    if reply is not _NOT_PREFETCHED:
        return _unpack(reply)
    return BotChild(cfg, fn, *args).finish()


_NOT_PREFETCHED = object()


def _child_read(_: None, path: str, limit: int, tail: bool) -> dict[str, Any] | None:
    """(as the bot) The first (or last) `limit` bytes of a regular file, base64, with its mtime and size."""
    import base64

    try:
        f = open_regular(path, follow=True)  # as the bot: it can only point us at what it can read
    except FileNotFoundError:
        return None
    with f:
        st = os.fstat(f.fileno())
        data, start = tail_of(f, limit) if tail else (f.read(limit + 1), 0)
    return {"data": base64.b64encode(data).decode(), "start": start, "size": st.st_size, "mtime": st.st_mtime}


def read_as_bot(cfg: BotConfig, path: str, limit: int, tail: bool = False) -> tuple[bytes, dict[str, Any]] | None:
    import base64

    got = as_bot(cfg, _child_read, path, limit, tail)
    return None if got is None else (base64.b64decode(got["data"]), got)
