"""waops.ops.waops_webhook: an Event-Driven Ansible event source for the waops host check's webhook.

The check (`waops-host check`) posts its alerts as JSON and signs each post: `X-Waops-Timestamp` (unix
time) and `X-Waops-Signature: sha256=<hex>`, an HMAC-SHA256 over "<timestamp>.<body>" with the webhook
secret. This source answers 401 and drops any post whose signature does not verify, that is older than
`max_age` seconds (a replay of a captured post), or whose id it already took; only verified posts become
events. The secret comes from a root-only file (`secret_file`, the same JSON the check reads, or a file
holding only the secret) or from the rulebook's vaulted variables (`secret`); it is never logged.

Each event is {"payload": <the check's JSON>, "meta": {"hosts": <the bot's host>, "endpoint": <path>}},
so a rulebook's run_playbook is limited to the host the alert came from.

Arguments:
    host: address to listen on (default 127.0.0.1)
    port: TCP port (default 5080)
    secret: the shared webhook secret
    secret_file: a file holding it (mode 0600 or stricter; refused otherwise)
    max_age: seconds a signed post stays acceptable (default 300)
    path: URL path to accept (default /waops)

Example:
    sources:
      - waops.ops.waops_webhook:
          port: 5080
          secret_file: /etc/waops/eda-webhook.json
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import stat
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

DOCUMENTATION = r"""
---
short_description: Receive the waops host check's signed webhook.
description:
  - An HTTP listener that turns the waops host check's alert posts into events, after verifying their
    HMAC-SHA256 signature, their age and that their id was not seen before.
options:
  host:
    description: Address to listen on.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    default: 5080
  secret:
    description: The shared webhook secret (from vaulted rulebook variables).
    type: str
  secret_file:
    description: A root-only file holding the secret (the check's JSON secrets file or the bare secret).
    type: str
  max_age:
    description: Seconds a signed post stays acceptable.
    type: int
    default: 300
  path:
    description: URL path the check posts to.
    type: str
    default: /waops
"""

EXAMPLES = r"""
- waops.ops.waops_webhook:
    port: 5080
    secret_file: /etc/waops/eda-webhook.json
"""

log = logging.getLogger(__name__)

MAX_BODY = 1 << 16
SEEN_IDS = 4096  # ids remembered against replays inside max_age


class Refused(Exception):
    """A post that does not become an event (the reason is logged, never the secret or the signature)."""


def read_secret(path: str) -> str:
    """The secret from a root-only file: {"webhook": {"secret": ...}} (the check's file), {"secret": ...},
    or the bare secret on its own."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            raise ValueError(f"{path} is readable by others: chmod 600")
        text = f.read(MAX_BODY).decode().strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict):
        inner = doc.get("webhook") if isinstance(doc.get("webhook"), dict) else doc
        return str(inner.get("secret") or "")
    return text


def verify(secret: bytes, headers: Any, body: bytes, max_age: float, now: float) -> None:
    """Raise Refused unless the post carries a fresh, valid HMAC-SHA256 signature of the body."""
    stamp = headers.get("X-Waops-Timestamp", "")
    given = headers.get("X-Waops-Signature", "")
    if not stamp.isdigit() or not given.startswith("sha256="):
        raise Refused("unsigned")
    want = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, given[len("sha256="):]):
        raise Refused("bad signature")
    if abs(now - int(stamp)) > max_age:
        raise Refused("too old")


class Listener:
    def __init__(self, queue: asyncio.Queue, secret: str, max_age: float, path: str) -> None:
        if not secret:
            raise ValueError("waops_webhook needs a secret (secret or secret_file)")
        self.queue = queue
        self.secret = secret.encode()
        self.max_age = max_age
        self.path = path
        self.seen: OrderedDict[str, float] = OrderedDict()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        try:
            if len(body) > MAX_BODY:
                raise Refused("too large")
            verify(self.secret, request.headers, body, self.max_age, time.time())
            try:
                payload = json.loads(body)
            except ValueError:
                raise Refused("not JSON") from None
            if not isinstance(payload, dict) or not payload.get("host") or not payload.get("bot"):
                raise Refused("no host or bot")
            msg_id = str(payload.get("id") or "")
            if msg_id and msg_id in self.seen:
                raise Refused("replayed id")
        except Refused as why:
            log.warning("waops_webhook: refused a post from %s: %s", request.remote, why)
            return web.json_response({"ok": False, "error": str(why)}, status=401)
        if msg_id:
            self.seen[msg_id] = time.time()
            while len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
        await self.queue.put({"payload": payload, "meta": {"hosts": str(payload["host"]), "endpoint": self.path}})
        return web.json_response({"ok": True})


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    secret = str(args.get("secret") or "")
    if not secret and args.get("secret_file"):
        secret = read_secret(str(args["secret_file"]))
    path = str(args.get("path") or "/waops")
    listener = Listener(queue, secret, float(args.get("max_age", 300)), path)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(path, listener.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, str(args.get("host") or "127.0.0.1"), int(args.get("port", 5080)))
    await site.start()
    log.info("waops_webhook: listening on %s:%s%s", args.get("host") or "127.0.0.1", args.get("port", 5080), path)
    try:
        await asyncio.Future()  # run until the engine cancels us
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # `python waops_webhook.py` prints what it would put on the queue (a manual try-out).
    class _Print:
        async def put(self, event: dict[str, Any]) -> None:
            print(json.dumps(event))

    asyncio.run(main(_Print(), {"secret": os.environ.get("WAOPS_WEBHOOK_SECRET", ""), "port": 5080}))  # type: ignore[arg-type]
