"""The simulated WhatsApp server: bot connections (TCP, newline-delimited JSON) and the fault logic.

Messages bot -> server (`t` = type): hello, ping, pair_code_request, prekeys_upload, send, presence,
retry. Server -> bot: qr, qr_end, pair_success, success, failure, stream_error, prekey_count, message,
skdm, ack, pong, clock. `failure` and `stream_error` carry the node Baileys would see and are followed
by the server closing the socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waops_host.versions import bump_patch, older_than
from waops_lab.sandbox import state as st
from waops_lab.sandbox.clock import SimClock
from waops_lab.sandbox.codes import (
    BANNED,
    CLIENT_OUTDATED,
    CONNECTION_CLOSED,
    CONNECTION_REPLACED,
    FORBIDDEN,
    LOGGED_OUT,
    RATE_LIMITED,
    RESTART_REQUIRED,
    TEMPORARY_BAN,
)

log = logging.getLogger("waops_lab.sandbox")

DEFAULT_CONTACT = "15550109999@s.whatsapp.net"  # the tester's phone that sends "test"
QR_FIRST_TTL = 60.0
QR_NEXT_TTL = 20.0
QR_REFS = 6
PREKEY_BATCH = {6: 30, 7: 812}  # pre-keys a client uploads at once, by library major version
MIN_PREKEYS = 5
FAULT_CAUSES = (
    "logged_out",
    "corrupt_keys",
    "network",
    "banned",
    "rate_limited",
    "client_outdated",
    "file_bloat",
    "shared_keys",  # not a cause of its own: what a conflict leaves behind (corrupt_keys after 440)
    "clear",
)


_UNLOGGED = frozenset({"ref", "pairing_code", "text"})


def _plain_code(code: str) -> str:
    """A pairing code as a person types it: dashes and spaces do not count, letters in any case."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


class FaultError(ValueError):
    """A control request the simulator cannot honour (unknown cause, nothing to link, ...)."""


@dataclass(eq=False)
class BotConn:
    writer: asyncio.StreamWriter
    phone: str | None = None
    version: str = "0.0.0"
    noise: str = ""
    pairing: str = "qr"
    device_id: str | None = None  # set once logged in
    blackholed: bool = False
    closed: bool = False
    session: dict[str, Any] | None = None
    qr_task: asyncio.Task | None = None
    link_task: asyncio.Task | None = None
    pair_code: str | None = None
    qr_shown: bool = False
    tasks: set[asyncio.Task] = field(default_factory=set)

    async def send(self, msg: dict[str, Any]) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def drop(self) -> None:
        """Close the TCP connection without a word (no stream error), as a network cut does."""
        self.closed = True
        self.writer.transport.close()

    async def close_after(self, msg: dict[str, Any]) -> None:
        await self.send(msg)
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


def _b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0].lstrip("v"))
    except ValueError:
        return 6


class Simulator:
    def __init__(
        self,
        state: st.SimState,
        state_path: Path | None = None,
        clock: SimClock | None = None,
        qr_ttl: tuple[float, float] = (QR_FIRST_TTL, QR_NEXT_TTL),
    ) -> None:
        self.state = state
        self.state_path = state_path
        self.clock = clock or SimClock()
        self.qr_ttl = qr_ttl
        self.live: dict[str, BotConn] = {}  # device id -> the logged-in socket
        self.pending: dict[str, BotConn] = {}  # phone -> socket waiting for a link
        self.conns: set[BotConn] = set()
        self.waiters: dict[tuple[str, str], list[asyncio.Future[str]]] = {}
        self._bg: set[asyncio.Task] = set()
        self._recent: OrderedDict[str, str] = OrderedDict()  # message id -> text, for retry receipts

    # -- helpers -------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def save(self) -> None:
        self.state.clock_now = self.now()
        st.save(self.state, self.state_path)

    def event(self, phone: str, kind: str, **detail: Any) -> None:
        self.state.add_event(self.state.phone(phone), self.now(), kind, **detail)
        # QR refs and pairing codes stay out of the log: they are what lets a device be linked.
        shown = {k: v for k, v in detail.items() if k not in _UNLOGGED}
        log.info("%s %s %s", phone, kind, json.dumps(shown, default=str) if shown else "")

    def _spawn(self, coro: Any, owner: BotConn | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        bag = owner.tasks if owner else self._bg
        bag.add(task)
        task.add_done_callback(bag.discard)
        return task

    def _start_session(self, conn: BotConn) -> None:
        conn.session = {
            "phone": conn.phone,
            "device": conn.device_id,
            "version": conn.version,
            "start": self.now(),
            "start_real": time.time(),
            "end": None,
            "end_real": None,
            "code": None,
            "reason": None,
            "had_keepalive": False,
        }

    def _end_session(self, conn: BotConn, code: int | None, reason: str) -> None:
        if conn.session is None or conn.session["end"] is not None:
            return
        conn.session.update(end=self.now(), end_real=time.time(), code=code, reason=reason)
        self.state.add_session(conn.session)

    # -- bot connections -----------------------------------------------------------------------
    async def handle_bot(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = BotConn(writer=writer)
        self.conns.add(conn)
        reason, code = "transport closed", CONNECTION_CLOSED
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if conn.blackholed:
                    continue  # a network cut: nothing gets through
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                try:
                    await self._dispatch(conn, msg)
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception:  # one bad frame must not take the simulator's view of the socket down
                    log.exception("error handling %s from %s", msg.get("t"), conn.phone)
                if conn.closed:
                    break
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            if conn.session and conn.session["end"] is None:
                self._end_session(conn, code, reason)
            self._forget(conn)
            for task in list(conn.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            self.save()

    def _forget(self, conn: BotConn) -> None:
        self.conns.discard(conn)
        if conn.device_id and self.live.get(conn.device_id) is conn:
            del self.live[conn.device_id]
        if conn.phone and self.pending.get(conn.phone) is conn:
            del self.pending[conn.phone]

    async def _dispatch(self, conn: BotConn, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "hello":
            await self._hello(conn, msg)
        elif conn.phone is None:
            await conn.close_after({"t": "failure", "attrs": {"reason": "400"}})
        elif kind == "ping":
            await conn.send({"t": "pong", "id": msg.get("id")})
        elif kind == "pair_code_request":
            await self._pair_code_request(conn, msg)
        elif kind == "prekeys_upload":
            self._prekeys_uploaded(conn, int(msg.get("count", 0)))
            await conn.send({"t": "ack", "id": msg.get("id")})
        elif kind == "send":
            await self._bot_sends(conn, msg)
        elif kind == "presence":
            self._presence(conn, msg)
        elif kind == "retry":
            await self._retry(conn, msg)
        elif kind == "logout":
            # sock.logout(): the companion removes itself; the client ends with 401 Intentional Logout.
            found = conn.device_id and self.state.find_device(conn.device_id)
            if found:
                self.live.pop(found[1].id, None)
                self._end_session(conn, LOGGED_OUT, "intentional_logout")
                await self.remove_device(found[1], "intentional_logout")
            await conn.close_after({"t": "ack", "id": msg.get("id")})

    async def _hello(self, conn: BotConn, msg: dict[str, Any]) -> None:
        conn.phone = str(msg.get("phone") or "").lstrip("+") or "unknown"
        conn.version = str((msg.get("library") or {}).get("version") or "0.0.0")
        conn.noise = str(msg.get("noise") or "")
        conn.pairing = "code" if msg.get("pairing") == "code" else "qr"
        phone = self.state.phone(conn.phone)
        phone.last_client_version = conn.version
        faults = phone.faults
        if faults.network_cut:
            conn.blackholed = True  # the client's connect timeout turns this into 408
            return
        if faults.ban_code:
            self.event(conn.phone, "refused", code=faults.ban_code)
            await conn.close_after({"t": "failure", "attrs": {"reason": str(faults.ban_code), "location": "frc"}})
            return
        minimum = faults.min_version or self.state.config.default_min_version
        if minimum and older_than(conn.version, minimum):
            self.event(conn.phone, "refused", code=CLIENT_OUTDATED, version=conn.version, minimum=minimum)
            await conn.close_after({"t": "failure", "attrs": {"reason": str(CLIENT_OUTDATED), "location": "frc"}})
            return
        device_id = msg.get("device")
        if device_id:
            await self._login(conn, str(device_id))
        else:
            await self._register(conn)

    async def _login(self, conn: BotConn, device_id: str) -> None:
        found = self.state.find_device(device_id)
        if not found or found[1].removed or found[1].noise != conn.noise:
            self.event(conn.phone, "refused", code=LOGGED_OUT, device=device_id)
            await conn.close_after({"t": "failure", "attrs": {"reason": str(LOGGED_OUT), "location": "frc"}})
            return
        phone, device = found
        conn.device_id = device_id
        older = self.live.get(device_id)
        if older is not None and older is not conn:
            # Two sockets on one set of credentials: the older one is told it was replaced.
            self.event(phone.number, "replaced", device=device_id)
            if phone.faults.shared_keys:
                for peer in device.ratchets:  # the replaced socket wrote its own ratchet steps
                    device.ratchets[peer] += 7
            self._end_session(older, CONNECTION_REPLACED, "replaced")
            older.device_id = None
            await older.close_after(
                {
                    "t": "stream_error",
                    "node": {
                        "tag": "stream:error",
                        "attrs": {},
                        "content": [{"tag": "conflict", "attrs": {"type": "replaced"}}],
                    },
                }
            )
        self.live[device_id] = conn
        self._start_session(conn)
        self.event(phone.number, "open", device=device_id, version=conn.version)
        await conn.send({"t": "success", "clock": self.clock.snapshot()})
        await conn.send({"t": "prekey_count", "count": device.prekeys})
        queued, device.queued = device.queued, []
        for item in queued:
            await conn.send(item)
        self.save()

    async def _register(self, conn: BotConn) -> None:
        old = self.pending.get(conn.phone)
        if old is not None and old is not conn:
            self._cancel_link(old)
        self.pending[conn.phone] = conn
        conn.qr_task = self._spawn(self._qr_loop(conn), conn)

    async def _qr_loop(self, conn: BotConn) -> None:
        for i in range(QR_REFS):
            ref = f"2@{_b64(24)}"
            conn.qr_shown = True
            self.event(conn.phone, "qr", ref=ref)
            await conn.send({"t": "qr", "ref": ref})
            if i == 0:
                self._schedule_auto_link(conn)
            await asyncio.sleep(self.qr_ttl[0] if i == 0 else self.qr_ttl[1])
        self.event(conn.phone, "qr_end")
        await conn.close_after({"t": "qr_end"})

    def _schedule_auto_link(self, conn: BotConn) -> None:
        cfg = self.state.config
        if cfg.auto_link and conn.link_task is None:
            conn.link_task = self._spawn(self._auto_link(conn, cfg.link_delay), conn)

    async def _auto_link(self, conn: BotConn, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.pending.get(conn.phone or "") is conn:
            await self._link(conn, "auto")

    def _cancel_link(self, conn: BotConn) -> None:
        for task in (conn.qr_task, conn.link_task):
            if task:
                task.cancel()

    async def _pair_code_request(self, conn: BotConn, msg: dict[str, Any]) -> None:
        code = str(msg.get("code") or "").upper()
        conn.pair_code = code
        self.event(conn.phone, "pairing_code", pairing_code=code)
        await conn.send({"t": "ack", "id": msg.get("id")})

    async def _link(self, conn: BotConn, trigger: str) -> dict[str, Any]:
        """The phone scans the QR (or types the code): a new device is linked, then 515."""
        phone = self.state.phone(conn.phone or "")
        method = "code" if conn.pair_code else "qr"
        self._cancel_link(conn)
        self.pending.pop(phone.number, None)
        n = phone.next_device
        phone.next_device += 1
        device = st.Device(
            id=f"{phone.number}:{n}@s.whatsapp.net",
            lid=f"{secrets.randbelow(10**14):014d}:{n}@lid",
            noise=conn.noise,
            linked_at=self.now(),
            method=method,
            last_active=self.now(),
        )
        phone.devices[device.id] = device
        self.event(phone.number, "linked", device=device.id, method=method, trigger=trigger)
        self.save()
        await conn.send(
            {
                "t": "pair_success",
                "method": method,
                "platform": "android",
                "me": {"id": device.id, "lid": device.lid, "name": "~"},
                "account": {
                    "details": _b64(32),
                    "accountSignatureKey": _b64(32),
                    "accountSignature": _b64(64),
                    "deviceSignature": _b64(64),
                },
            }
        )
        restart = {"tag": "stream:error", "attrs": {"code": str(RESTART_REQUIRED)}}
        await conn.close_after({"t": "stream_error", "node": restart})
        return {"device": device.id, "method": method}

    def _prekeys_uploaded(self, conn: BotConn, count: int) -> None:
        found = conn.device_id and self.state.find_device(conn.device_id)
        if found:
            found[1].prekeys += max(count, 0)
            self.event(found[0].number, "prekeys_uploaded", count=count)

    def _presence(self, conn: BotConn, msg: dict[str, Any]) -> None:
        found = conn.device_id and self.state.find_device(conn.device_id)
        if not found:
            return
        if conn.session:
            conn.session["had_keepalive"] = True
        found[1].presences += 1
        found[1].last_presence = self.now()
        if self.state.config.presence_counts_as_activity:
            found[1].last_active = self.now()
        self.event(found[0].number, "presence", presence=msg.get("type"))

    async def _bot_sends(self, conn: BotConn, msg: dict[str, Any]) -> None:
        found = conn.device_id and self.state.find_device(conn.device_id)
        if not found:
            await conn.send({"t": "ack", "id": msg.get("id"), "error": LOGGED_OUT, "text": "not-authorized"})
            return
        phone, device = found
        if phone.faults.rate_limited:
            self.event(phone.number, "rate_limited", to=msg.get("to"))
            await conn.send({"t": "ack", "id": msg.get("id"), "error": RATE_LIMITED, "text": "rate-overlimit"})
            return
        device.last_active = self.now()
        to, text = str(msg.get("to")), str(msg.get("text", ""))
        self.event(phone.number, "bot_message", to=to, text=text[:200])
        await conn.send({"t": "ack", "id": msg.get("id")})
        for fut in self.waiters.pop((phone.number, to), []):
            if not fut.done():
                fut.set_result(text)

    async def _retry(self, conn: BotConn, msg: dict[str, Any]) -> None:
        found = conn.device_id and self.state.find_device(conn.device_id)
        if not found:
            return
        phone, device = found
        contact, reason, count = str(msg.get("from")), msg.get("reason"), int(msg.get("count", 1))
        self.event(phone.number, "retry_receipt", reason=reason, count=count)
        text = self._recent.get(str(msg.get("id")), "")
        if reason == "no_session":
            # The sender starts over with a pre-key message: this is how a dropped session heals.
            device.ratchets.pop(contact, None)
            await self._deliver(device, contact, text, msg_id=str(msg.get("id")), retry=count)
        elif reason == "bad_mac" and count < 2:
            # Resent under the same (server-side) ratchet: the stale client fails again.
            r = device.ratchets.get(contact, 0)
            await self._send_to_device(
                device,
                {
                    "t": "message",
                    "id": msg.get("id"),
                    "from": contact,
                    "text": text,
                    "pkmsg": False,
                    "prev": r - 1,
                    "next": r,
                    "retry": count,
                },
            )

    # -- delivering to a device ----------------------------------------------------------------
    async def _send_to_device(self, device: st.Device, item: dict[str, Any]) -> bool:
        conn = self.live.get(device.id)
        if conn is None:
            device.queued.append(item)
            del device.queued[: -st.MAX_QUEUED]
            return False
        await conn.send(item)
        return True

    async def _deliver(
        self, device: st.Device, contact: str, text: str, msg_id: str | None = None, retry: int = 0
    ) -> None:
        """One message from `contact`; advances the server-side ratchet for that pair."""
        device.last_active = self.now()
        prev = device.ratchets.get(contact)
        item: dict[str, Any] = {
            "t": "message",
            "id": msg_id or f"3EB0{secrets.token_hex(8).upper()}",
            "from": contact,
            "text": text,
            "ts": int(self.now()),
            "pkmsg": prev is None,
            "prev": prev if prev is not None else 0,
            "next": (prev or 0) + 1,
        }
        if retry:
            item["retry"] = retry
        device.ratchets[contact] = item["next"]
        self._recent[item["id"]] = text
        while len(self._recent) > 1000:
            self._recent.popitem(last=False)
        await self._send_to_device(device, item)

    def _current_device(self, number: str) -> st.Device:
        phone = self.state.phone(number)
        active = phone.active_devices()
        if not active:
            raise FaultError(f"phone {number} has no linked device")
        live = [d for d in active if d.id in self.live]
        return (live or active)[-1]

    # -- control operations (called by the HTTP API) ------------------------------------------
    async def link(self, number: str, code: str | None = None) -> dict[str, Any]:
        """The phone links the waiting bot; with `code`, as a person types a pairing code: only the code
        the bot asked for links it."""
        conn = self.pending.get(number)
        if conn is None or not (conn.qr_shown or conn.pair_code):
            raise FaultError(f"no QR or pairing code is waiting for phone {number}")
        if code is not None and _plain_code(code) != _plain_code(conn.pair_code or ""):
            raise FaultError(f"pairing code for phone {number} does not match the one the bot shows")
        return await self._link(conn, "command")

    def set_auto_link(self, enabled: bool, delay: float | None) -> None:
        self.state.config.auto_link = bool(enabled)
        if delay is not None:
            self.state.config.link_delay = float(delay)
        if enabled:
            for conn in list(self.pending.values()):
                if conn.qr_shown or conn.pair_code:
                    self._schedule_auto_link(conn)
        self.save()

    async def send_message(self, number: str, text: str, timeout: float, contact: str | None) -> str:
        contact = contact or DEFAULT_CONTACT
        device = self._current_device(number)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault((number, contact), []).append(fut)
        self.event(number, "contact_message", contact=contact, text=text[:200])
        await self._deliver(device, contact, text)
        self.save()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            waiting = self.waiters.get((number, contact), [])
            if fut in waiting:
                waiting.remove(fut)

    async def remove_device(self, device: st.Device, reason: str, at: float | None = None) -> None:
        phone, _ = self.state.find_device(device.id) or (None, None)
        device.removed, device.removed_reason, device.removed_at = True, reason, self.now() if at is None else at
        if phone:
            self.event(phone.number, "device_removed", device=device.id, reason=reason)
        conn = self.live.pop(device.id, None)
        if conn is not None:
            self._end_session(conn, LOGGED_OUT, reason)
            await conn.close_after(
                {
                    "t": "stream_error",
                    "node": {
                        "tag": "stream:error",
                        "attrs": {"code": str(LOGGED_OUT)},
                        "content": [{"tag": "conflict", "attrs": {"type": "device_removed"}}],
                    },
                }
            )
        self.save()

    async def fault(self, number: str, cause: str, params: dict[str, Any]) -> dict[str, Any]:
        if cause not in FAULT_CAUSES:
            raise FaultError(f"unknown cause {cause!r}; one of {', '.join(FAULT_CAUSES)}")
        phone = self.state.phone(number)
        self.event(number, "fault", cause=cause, params=params)
        result: dict[str, Any] = {"phone": number, "cause": cause}
        if cause == "clear":
            for conn in [c for c in self.conns if c.phone == number and c.blackholed]:
                conn.drop()  # so the bot notices the way back at once instead of at its timeout
            phone.faults = st.Faults()
        elif cause == "logged_out":
            devices = phone.active_devices()
            if not devices:
                raise FaultError(f"phone {number} has no linked device")
            for device in devices:
                await self.remove_device(device, str(params.get("reason", "device_removed")))
            result["devices"] = [d.id for d in devices]
        elif cause == "network":
            phone.faults.network_cut = True
            for conn in [c for c in self.conns if c.phone == number]:
                if conn.session:
                    self._end_session(conn, CONNECTION_CLOSED, "network")
                conn.drop()
        elif cause == "banned":
            code = int(params.get("code", FORBIDDEN))
            if code not in (TEMPORARY_BAN, FORBIDDEN, BANNED):
                raise FaultError("banned code must be 402, 403 or 406")
            phone.faults.ban_code = code
            for conn in [c for c in self.conns if c.phone == number]:
                self._end_session(conn, code, "banned")
                await conn.close_after({"t": "failure", "attrs": {"reason": str(code), "location": "frc"}})
        elif cause == "rate_limited":
            phone.faults.rate_limited = True
            if params.get("provoke", True) and phone.active_devices():
                # Make the bot try to answer, so the 429 shows up in its logs at once.
                await self._deliver(self._current_device(number), DEFAULT_CONTACT, "test")
        elif cause == "client_outdated":
            current = phone.last_client_version or "0.0.0"
            minimum = str(params.get("min_version") or bump_patch(current))
            phone.faults.min_version = minimum
            result["min_version"] = minimum
            for conn in [c for c in self.conns if c.phone == number and older_than(c.version, minimum)]:
                self._end_session(conn, CLIENT_OUTDATED, "client_outdated")
                await conn.close_after({"t": "failure", "attrs": {"reason": str(CLIENT_OUTDATED), "location": "frc"}})
        elif cause == "corrupt_keys":
            result.update(await self._corrupt_keys(number, params))
        elif cause == "shared_keys":
            phone.faults.shared_keys = True
        elif cause == "file_bloat":
            result.update(await self._file_bloat(number, params))
        self.save()
        return result

    async def _corrupt_keys(self, number: str, params: dict[str, Any]) -> dict[str, Any]:
        device = self._current_device(number)
        contact = str(params.get("contact") or DEFAULT_CONTACT)
        if contact not in device.ratchets:
            await self._deliver(device, contact, "hello")  # a session must exist to go stale
        step = int(params.get("step", 7))
        for peer in device.ratchets:
            device.ratchets[peer] += step
        for _ in range(int(params.get("burst", 3))):
            await self._deliver(device, contact, "test")
        return {"device": device.id, "ratchets": dict(device.ratchets)}

    async def _file_bloat(self, number: str, params: dict[str, Any]) -> dict[str, Any]:
        device = self._current_device(number)
        phone = self.state.phone(number)
        total = int(params.get("count", 2000))
        batch = PREKEY_BATCH.get(_major(phone.last_client_version or "6"), 30)
        rounds = max(1, math.ceil(total / 2 / batch))
        for _ in range(rounds):
            # "pre-key count low" again and again: the client keeps generating keys it never deletes.
            await self._send_to_device(device, {"t": "prekey_count", "count": 0})
        senders = max(0, total - rounds * batch)
        groups = [f"1203630{secrets.randbelow(10**11):011d}@g.us" for _ in range(max(1, senders // 40))]
        items = [
            {"group": groups[i % len(groups)], "from": f"1555{secrets.randbelow(10**7):07d}@s.whatsapp.net"}
            for i in range(senders)
        ]
        for i in range(0, len(items), 250):
            await self._send_to_device(device, {"t": "skdm", "items": items[i : i + 250]})
        return {"device": device.id, "prekey_rounds": rounds, "prekey_batch": batch, "sender_keys": senders}

    # -- the clock ---------------------------------------------------------------------------
    async def broadcast_clock(self) -> None:
        for conn in list(self.live.values()):
            await conn.send({"t": "clock", "clock": self.clock.snapshot()})

    async def inactivity_loop(self, period: float = 0.25) -> None:
        """Logs devices out after `inactivity_days` of sim time without activity (the 14-day rule)."""
        while True:
            await asyncio.sleep(period)
            await self.check_inactivity()

    async def check_inactivity(self) -> None:
        limit = self.state.config.inactivity_days * 86400
        now = self.now()
        for phone in list(self.state.phones.values()):
            for device in phone.active_devices():
                if now - device.last_active > limit:
                    # Removed as of the moment the limit passed, not when this loop noticed (a fast clock
                    # moves hours between two checks): lifetimes stay exact.
                    await self.remove_device(device, "inactivity", at=device.last_active + limit)

    # -- views -------------------------------------------------------------------------------
    def sessions(self) -> list[dict[str, Any]]:
        """Finished sessions, then the ones still open (end is null)."""
        live = [c.session for c in self.live.values() if c.session and c.session["end"] is None]
        return [*self.state.sessions, *live]

    def lifetimes(self) -> list[dict[str, Any]]:
        """How long each linked device lived: from the link to its removal (the 14-day inactivity logout,
        a logout fault, ...), or until now while it is still linked. keepalive: it sent presence updates."""
        now = self.now()
        out = []
        for phone in self.state.phones.values():
            for d in phone.devices.values():
                end = d.removed_at if d.removed else None
                out.append(
                    {
                        "phone": phone.number,
                        "device": d.id,
                        "linked_at": d.linked_at,
                        "end": end,
                        "lifetime_s": (end if end is not None else now) - d.linked_at,
                        "ended": d.removed,
                        "reason": d.removed_reason,
                        "presences": d.presences,
                        "keepalive": d.presences > 0,
                        "last_active": d.last_active,
                    }
                )
        return sorted(out, key=lambda r: r["linked_at"])

    def phone_view(self, number: str) -> dict[str, Any]:
        phone = self.state.phone(number)
        pending = self.pending.get(number)
        return {
            "phone": number,
            "faults": phone.faults.active(),
            "fault_detail": {
                "ban_code": phone.faults.ban_code,
                "min_version": phone.faults.min_version,
                "network_cut": phone.faults.network_cut,
                "rate_limited": phone.faults.rate_limited,
            },
            "last_client_version": phone.last_client_version,
            "devices": [
                {
                    "id": d.id,
                    "lid": d.lid,
                    "method": d.method,
                    "linked_at": d.linked_at,
                    "last_active": d.last_active,
                    "removed": d.removed,
                    "removed_reason": d.removed_reason,
                    "removed_at": d.removed_at,
                    "prekeys": d.prekeys,
                    "presences": d.presences,
                    "ratchets": dict(d.ratchets),
                    "connected": d.id in self.live,
                    "queued": len(d.queued),
                }
                for d in phone.devices.values()
            ],
            "connected": any(d.id in self.live for d in phone.active_devices()),
            "waiting_link": None
            if pending is None
            else {"qr_shown": pending.qr_shown, "pairing_code": pending.pair_code},
            "connections": sum(1 for c in self.conns if c.phone == number),
        }

    def status(self) -> dict[str, Any]:
        cfg = self.state.config
        return {
            "clock": self.clock.snapshot(),
            "config": {
                "auto_link": cfg.auto_link,
                "link_delay": cfg.link_delay,
                "inactivity_days": cfg.inactivity_days,
                "presence_counts_as_activity": cfg.presence_counts_as_activity,
                "default_min_version": cfg.default_min_version,
            },
            "phones": {n: self.phone_view(n) for n in sorted(self.state.phones)},
            "connections": len(self.conns),
        }
