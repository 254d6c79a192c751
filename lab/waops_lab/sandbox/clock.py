"""The simulator's accelerated clock: sim seconds = anchor + real elapsed * speed (+ manual advances)."""

from __future__ import annotations

import time


class SimClock:
    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self._speed = float(speed)
        self._anchor_sim = time.time() if start is None else float(start)
        self._anchor_mono = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        """Simulated Unix time in seconds."""
        return self._anchor_sim + (time.monotonic() - self._anchor_mono) * self._speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be > 0")
        # Re-anchor so the change applies from now on, not retroactively.
        self._anchor_sim, self._anchor_mono = self.now(), time.monotonic()
        self._speed = float(speed)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._anchor_sim += float(seconds)

    def snapshot(self) -> dict[str, float]:
        return {"now": self.now(), "speed": self._speed, "real": time.time()}
