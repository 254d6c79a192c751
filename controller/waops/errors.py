"""Domain errors carry their exit code; the CLI's top level turns them into that code, no traceback."""

from __future__ import annotations

# Exit codes, documented in `waops --help`.
EXIT_OK = 0
EXIT_PROBLEM = 1  # diagnose: a problem was found; recover: not resolved
EXIT_USAGE = 2  # bad flags, malformed inventory or input file
EXIT_UNREACHABLE = 3  # a host could not be reached or its key was refused
EXIT_NEEDS_HUMAN = 4  # recover: a person must act (ban, rate limit, scan not done)
EXIT_INTERRUPTED = 130


class WaopsError(Exception):
    exit_code = EXIT_PROBLEM


class UsageError(WaopsError):
    exit_code = EXIT_USAGE


class UnreachableError(WaopsError):
    exit_code = EXIT_UNREACHABLE


class LabError(WaopsError):
    """The lab could not be built, booted or torn down."""
