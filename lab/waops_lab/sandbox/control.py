"""Control API: a tiny HTTP/1.1 JSON server on asyncio (stdlib only). Routes are listed in __init__."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from http import HTTPStatus
from typing import Any

from waops_lab.sandbox.server import FaultError, Simulator

MAX_BODY = 1 << 20


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, payload = 500, {"error": "internal error"}
        try:
            method, path, body = await self._read_request(reader)
            status, payload = 200, await self.route(method, path, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except FaultError as exc:
            status, payload = 409, {"error": str(exc)}
        except TimeoutError:
            status, payload = 504, {"error": "timed out waiting for the bot"}
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = 400, {"error": f"bad request: {exc}"}
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + data)
            await writer.drain()
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, Any]]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3:
            raise HttpError(400, "bad request line")
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY:
            raise HttpError(413, "body too large")
        raw = await reader.readexactly(length) if length else b""
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return parts[0].upper(), parts[1].split("?", 1)[0].rstrip("/") or "/", body

    async def route(self, method: str, path: str, body: dict[str, Any]) -> Any:
        sim = self.sim
        if m := re.fullmatch(r"/phones/\+?(\d+)(/[a-z-]+)?", path):
            number, action = m.group(1), m.group(2) or ""
            if method == "GET" and action == "":
                return sim.phone_view(number)
            if method == "GET" and action == "/events":
                return {"phone": number, "events": sim.state.phone(number).events}
            if method == "POST" and action == "/fault":
                cause = str(body.pop("cause", ""))
                return await sim.fault(number, cause, body)
            if method == "POST" and action == "/clear":
                return await sim.fault(number, "clear", {})
            if method == "POST" and action == "/link":
                return await sim.link(number, None if body.get("code") is None else str(body["code"]))
            if method == "POST" and action == "/message":
                reply = await sim.send_message(
                    number, str(body["text"]), float(body.get("timeout", 10)), body.get("contact")
                )
                return {"phone": number, "reply": reply}
        if method == "GET" and path == "/status":
            return sim.status()
        if method == "GET" and path == "/sessions":
            return {"sessions": sim.sessions()}
        if method == "GET" and path == "/lifetimes":
            return {"now": sim.now(), "devices": sim.lifetimes()}
        if method == "GET" and path == "/clock":
            return sim.clock.snapshot()
        if method == "POST" and path == "/clock/advance":
            sim.clock.advance(float(body["seconds"]))
            await sim.broadcast_clock()
            await sim.check_inactivity()
            sim.save()
            return sim.clock.snapshot()
        if method == "POST" and path == "/clock/speed":
            sim.clock.set_speed(float(body["speed"]))
            await sim.broadcast_clock()
            return sim.clock.snapshot()
        if method == "POST" and path == "/auto-link":
            sim.set_auto_link(bool(body["enabled"]), body.get("delay"))
            return sim.status()["config"]
        if method == "POST" and path == "/config":
            cfg = sim.state.config
            for key in ("inactivity_days", "presence_counts_as_activity", "default_min_version"):
                if key in body:
                    setattr(cfg, key, body[key])
            sim.save()
            return sim.status()["config"]
        raise HttpError(404, f"no route {method} {path}")
