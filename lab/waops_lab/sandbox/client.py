"""SimulatorClient: the control API from Python (lab, tests, `waops lab fault`). urllib only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class SimulatorError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"simulator answered {status}: {message}")
        self.status = status


class SimulatorClient:
    def __init__(self, control_url: str, timeout: float = 10.0) -> None:
        self.base = control_url.rstrip("/")
        if "://" not in self.base:
            self.base = "http://" + self.base
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = str(exc.reason)
            raise SimulatorError(exc.code, message) from None

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def phone(self, phone: str) -> dict[str, Any]:
        return self._call("GET", f"/phones/{phone}")

    def events(self, phone: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/phones/{phone}/events")["events"]

    def fault(self, phone: str, cause: str, **params: Any) -> dict[str, Any]:
        return self._call("POST", f"/phones/{phone}/fault", {"cause": cause, **params})

    def clear(self, phone: str) -> dict[str, Any]:
        return self._call("POST", f"/phones/{phone}/clear", {})

    def link(self, phone: str, code: str | None = None) -> dict[str, Any]:
        """The phone scans the QR, or (with `code`) types the pairing code; a wrong code links nothing."""
        return self._call("POST", f"/phones/{phone}/link", {} if code is None else {"code": code})

    def set_auto_link(self, enabled: bool, delay: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"enabled": enabled}
        if delay is not None:
            body["delay"] = delay
        return self._call("POST", "/auto-link", body)

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "/config", settings)

    def send_message(self, phone: str, text: str, timeout: float = 10.0, contact: str | None = None) -> str:
        """A contact sends `text` to the bot; returns the bot's reply (SimulatorError 504 if none)."""
        body: dict[str, Any] = {"text": text, "timeout": timeout}
        if contact:
            body["contact"] = contact
        return self._call("POST", f"/phones/{phone}/message", body, timeout=timeout + 5)["reply"]

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock/advance", {"seconds": seconds})

    def set_clock_speed(self, speed: float) -> dict[str, Any]:
        return self._call("POST", "/clock/speed", {"speed": speed})

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")

    def sessions(self) -> list[dict[str, Any]]:
        return self._call("GET", "/sessions")["sessions"]

    def lifetimes(self) -> list[dict[str, Any]]:
        """Linked-device lifetimes (sim seconds), with whether the device sent keep-alives."""
        return self._call("GET", "/lifetimes")["devices"]
