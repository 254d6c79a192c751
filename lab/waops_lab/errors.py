"""The lab's one error: something could not be built, booted or torn down (exit 1, one line)."""

from __future__ import annotations

from waops.errors import WaopsError


class LabError(WaopsError):
    """The lab could not be built, booted or torn down."""
