"""Exit codes and domain errors. Every exit code waops returns is named here, once; errors carry theirs
and the CLI's top level turns them into that code, with no traceback."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `waops` returns; README "Exit codes" and `waops --help` show this table."""

    OK = 0  # healthy / done
    PROBLEM = 1  # diagnose: a problem was found; recover, migrate, move: not resolved
    USAGE = 2  # bad flags, no or malformed inventory, bad store, config or input file
    UNREACHABLE = 3  # a host could not be reached or its key was refused
    NEEDS_HUMAN = 4  # recover: a person must act (ban, rate limit, scan not done)
    BUSY = 75  # another run holds the bot's lock; the host agent's "lock busy" too (EX_TEMPFAIL)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "healthy / done",
    ExitCode.PROBLEM: "problem found (diagnose) or not resolved (recover, migrate, move)",
    ExitCode.USAGE: "usage error: bad flags, no or malformed inventory, bad store, config or input",
    ExitCode.UNREACHABLE: "a host was unreachable or its SSH host key was refused",
    ExitCode.NEEDS_HUMAN: "a person must act (ban, rate limit, QR not scanned)",
    ExitCode.BUSY: "busy: another run holds the bot's lock (try again later)",
    ExitCode.INTERRUPTED: "interrupted",
}

# The names the modules import (one value each, from the table above).
EXIT_OK = ExitCode.OK
EXIT_PROBLEM = ExitCode.PROBLEM
EXIT_USAGE = ExitCode.USAGE
EXIT_UNREACHABLE = ExitCode.UNREACHABLE
EXIT_NEEDS_HUMAN = ExitCode.NEEDS_HUMAN
EXIT_BUSY = ExitCode.BUSY
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


class WaopsError(Exception):
    exit_code: int = ExitCode.PROBLEM


class UsageError(WaopsError):
    exit_code = ExitCode.USAGE


class UnreachableError(WaopsError):
    exit_code = ExitCode.UNREACHABLE
