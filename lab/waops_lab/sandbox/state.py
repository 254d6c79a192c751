"""Server-side truth of the simulator: phones, their linked devices, faults; persisted as one JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_EVENTS = 500
MAX_SESSIONS = 5000
MAX_QUEUED = 200


@dataclass
class Device:
    id: str  # "15550100001:3@s.whatsapp.net"
    lid: str
    noise: str  # the client's noise public key, fixed at link time: other creds get 401
    linked_at: float
    method: str  # qr | code
    last_active: float
    removed: bool = False
    removed_reason: str | None = None
    removed_at: float | None = None
    prekeys: int = 0  # pre-keys the device has uploaded and the server still holds
    presences: int = 0  # presence updates (keep-alives) the device sent over its whole life
    last_presence: float | None = None
    # Signal ratchet position per contact, as the server (the sender) sees it.
    ratchets: dict[str, int] = field(default_factory=dict)
    queued: list[dict[str, Any]] = field(default_factory=list)  # messages waiting for the device


@dataclass
class Faults:
    network_cut: bool = False
    ban_code: int | None = None  # 403 banned, 402 temporary ban
    rate_limited: bool = False
    min_version: str | None = None
    # Two sockets on this phone's device write the same keys: each `replaced` moves the server-side
    # ratchets on (the other socket used them), so the copy that stays has stale sessions (Bad MAC).
    shared_keys: bool = False

    def active(self) -> list[str]:
        out = []
        if self.shared_keys:
            out.append("shared_keys")
        if self.network_cut:
            out.append("network")
        if self.ban_code:
            out.append("banned")
        if self.rate_limited:
            out.append("rate_limited")
        if self.min_version:
            out.append("client_outdated")
        return out


@dataclass
class Phone:
    number: str
    next_device: int = 1
    devices: dict[str, Device] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    last_client_version: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def active_devices(self) -> list[Device]:
        return [d for d in self.devices.values() if not d.removed]


@dataclass
class Config:
    auto_link: bool = True
    link_delay: float = 2.0
    inactivity_days: float = 14.0
    # Whether a presence update counts as activity for the inactivity logout; an open question
    # (no maintainer statement says it does), so a knob for the keep-alive benchmark.
    presence_counts_as_activity: bool = True
    default_min_version: str | None = None


@dataclass
class SimState:
    phones: dict[str, Phone] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    config: Config = field(default_factory=Config)
    clock_now: float | None = None  # sim time at the last save, so a restart does not go back in time

    def phone(self, number: str) -> Phone:
        if number not in self.phones:
            self.phones[number] = Phone(number=number)
        return self.phones[number]

    def find_device(self, device_id: str) -> tuple[Phone, Device] | None:
        user = device_id.split("@", 1)[0].split(":", 1)[0]
        phone = self.phones.get(user)
        if phone and device_id in phone.devices:
            return phone, phone.devices[device_id]
        return None

    def add_event(self, phone: Phone, at: float, kind: str, **detail: Any) -> None:
        phone.events.append({"at": at, "type": kind, **detail})
        del phone.events[:-MAX_EVENTS]

    def add_session(self, record: dict[str, Any]) -> None:
        self.sessions.append(record)
        del self.sessions[:-MAX_SESSIONS]

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimState:
        phones = {}
        for number, p in data.get("phones", {}).items():
            devices = {k: Device(**v) for k, v in p.get("devices", {}).items()}
            phones[number] = Phone(
                number=number,
                next_device=p.get("next_device", 1),
                devices=devices,
                faults=Faults(**p.get("faults", {})),
                last_client_version=p.get("last_client_version"),
                events=p.get("events", []),
            )
        return cls(
            phones=phones,
            sessions=data.get("sessions", []),
            config=Config(**data.get("config", {})),
            clock_now=data.get("clock_now"),
        )


def load(path: Path | None) -> SimState:
    if path is None or not path.exists():
        return SimState()
    return SimState.from_json(json.loads(path.read_text()))


def save(state: SimState, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # tmp + rename: a crash mid-write must not leave the server truth half written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state.to_json(), fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
