"""The status codes the simulator ends connections with.

Named as Baileys names them (`DisconnectReason`, lib/Types): the contract tests (tests/contracts) check
these values against every pinned real release, so the simulator cannot drift from the library. The
codes WhatsApp sends that the enum does not name come after it.
"""

from __future__ import annotations

DISCONNECT_REASON: dict[str, int] = {
    "connectionClosed": 428,
    "connectionLost": 408,
    "connectionReplaced": 440,
    "timedOut": 408,
    "loggedOut": 401,
    "badSession": 500,
    "restartRequired": 515,
    "multideviceMismatch": 411,
    "forbidden": 403,
    "unavailableService": 503,
}

CONNECTION_CLOSED = DISCONNECT_REASON["connectionClosed"]
CONNECTION_REPLACED = DISCONNECT_REASON["connectionReplaced"]
LOGGED_OUT = DISCONNECT_REASON["loggedOut"]
RESTART_REQUIRED = DISCONNECT_REASON["restartRequired"]
FORBIDDEN = DISCONNECT_REASON["forbidden"]

# Outside the enum: `<failure reason="...">` and error acks the library passes through as numbers.
TEMPORARY_BAN = 402
CLIENT_OUTDATED = 405  # "Method Not Allowed": the client's version is refused
BANNED = 406
RATE_LIMITED = 429  # error ack text `rate-overlimit`
OUTSIDE_ENUM = (TEMPORARY_BAN, CLIENT_OUTDATED, BANNED, RATE_LIMITED)
