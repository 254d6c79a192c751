"""The diagnosis rules as data: log patterns and WhatsApp status codes -> cause, code, weight.

Edit the tables, not the classifier (waops.diagnose). Each log rule has a `kind`:
- `failure`: a line that names a state the bot is in (a disconnect, a crash, a missing module);
- `open`: the connection is (again) open: failures before it are history, the newest state wins;
- `pairing`: pairing just finished, so the 515 that follows is expected, not a fault;
- `flood`: counted; only a burst (`min_count` in the current session) means something (Bad MAC);
- `support`: strengthens a flood (libsignal's "no session" errors);
- `noise`: known, harmless on its own (shown as such, never decides).
`weight` is how sure one such line makes us (0..1). A line that carries a status code is classified by
CODES (code and conflict type, never by message alone) unless a more specific rule weighs more.
Facts seen only "in threads" (docs/DOMAIN.md) carry lower weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from waops.logparse import Record
from waops.model import CAUSES
from waops.prefilter import Prefilter
from waops_host.base import KEY_TYPES

Kind = Literal["failure", "open", "pairing", "flood", "support", "alive", "noise"]
# Who writes the text a rule matches: Baileys itself, libsignal (console.*), the bot's own code or a
# common template, the process manager, node, systemd, a product built on Baileys (Evolution API, WAHA),
# or the runtime around the bot (DNS, TCP, TLS, the auth store's database).
Origin = Literal["baileys", "libsignal", "bot", "pm2", "node", "systemd", "peer", "runtime"]
ORIGINS: tuple[str, ...] = get_args(Origin)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str  # regex, case-insensitive and multi-line, searched in the record's text
    kind: Kind
    cause: str | None = None
    code: int | None = None
    weight: float = 0.0
    min_count: int = 1  # flood: lines needed in the current session
    origin: Origin = "bot"
    literal: str | None = None  # origin baileys: the exact text expected in Baileys' lib/*.js
    codeless: bool = False  # only for a record that carries no code of its own (the code would decide)

    def __post_init__(self) -> None:
        if self.cause is not None and self.cause not in CAUSES:
            raise ValueError(f"rule {self.name}: unknown cause {self.cause}")
        if (self.origin == "baileys") != (self.literal is not None):
            raise ValueError(f"rule {self.name}: a literal is given exactly when the origin is baileys")


_LIBSIGNAL = (r"Bad MAC|MessageCounterError|Key used already or never filled|SessionError|No sessions?\b|"
              r"No matching sessions found|No session found to decrypt|No session record|Invalid PreKey ID|"
              r"isSessionRecordError|Failed to decrypt message with any known session|"
              r"SenderKeyRecord|No SenderKeyRecord|Invalid signature|Untrusted identity")

# a file of the auth store (`pre-key-12.json`, `creds.json`), by the agent's own list of key types
_KEY_FILE = r"(?:\b(?:" + "|".join(re.escape(t) for t in KEY_TYPES) + r")-[^'\n/\\]*|\bcreds)\.json"

# Ordered only for readability; every matching rule is considered and the heaviest decides a line.
LOG_RULES: tuple[Rule, ...] = (
    # -- state: the connection is open (newest state wins over older failures)
    Rule("opened", r"opened connection to WA", "open", origin="baileys", literal="opened connection to WA"),
    Rule("open_state", r"""connection['"]?\s*[:=]\s*['"]?open\b|connection (?:is )?open(?:ed)?\b|"""
         r"""\bstate['"]?\s*[:=]\s*['"]open['"]|status\W{1,4}WORKING\b""", "open", origin="bot"),
    # a status line a bot prints for people (never a line that goes on with an object: "Connected... {")
    Rule("open_console", r"^[^\w{]*(?:bot |client |whatsapp |wa )?(?:is )?(?:connected|conectad[oa]|online|ready)"
         r"(?: (?:to whatsapp|to wa|successfully|com sucesso|with whatsapp))?[^\w{]*$|login successful|"
         r"\b(?:session|connection|bot|client|instance) (?:is )?(?:live|online|ready)\b|"
         r"(?:successfully|sucesso) connected|connected successfully|conex[aã]o (?:aberta|estabelecida)|"
         r"whatsapp (?:is )?(?:connected|ready)|client is ready|bot (?:is )?(?:online|ready|connected)",
         "open", origin="bot"),
    # work Baileys does only on a logged-in socket: the connection is open even if no line says so
    Rule("open_prekeys", r"uploaded pre-keys", "open", origin="baileys", literal="uploaded pre-keys"),
    Rule("open_app_state", r"resyncing \w+ from v\d+|\bsynced \w+ to v\d+", "open", origin="baileys",
         literal="resyncing "),
    # QR codes the bot keeps printing: nobody has linked the device (a later pairing supersedes them)
    Rule("qr_waiting", r"\bQR(?: ?code)? (?:generated|generado|gerado|generato|ready|printed)\b|"
         r"\bscan (?:the |this )?QR\b|require[sd]? authentication over QR", "failure", "logged_out", None, 0.55,
         origin="bot"),
    Rule("pairing", r"pairing configured successfully", "pairing", origin="baileys",
         literal="pairing configured successfully"),
    Rule("pairing_new_login", r"pair[- ]success|isNewLogin\W+true", "pairing", origin="bot"),
    # -- the library does not load: wrong module system or a broken install
    Rule("esm", r"ERR_REQUIRE_\w+|require\(\) of ES Module|Cannot require\(\) ES Module|"
         r"ERR_UNSUPPORTED_DIR_IMPORT|Named export '[^']+' not found|does not provide an export named",
         "failure", "library_mismatch", None, 0.95, origin="node"),
    Rule("missing_module", r"Cannot find module|ERR_MODULE_NOT_FOUND|ERR_PACKAGE_PATH_NOT_EXPORTED|"
         r"\b(?:can'?t|cannot|could ?n[o']?t|unable to) (?:find|found|resolve|load) (?:the )?module\b",
         "failure", "library_mismatch", None, 0.93, origin="node"),
    # a package manager could not install the library: nothing to load
    # (Baileys pulls libsignal from git: no git, no key for the ssh URL, or npm's allow-git refusing it)
    Rule("install_failed", r"npm (?:ERR!|error) (?:syscall spawn git|(?:enoent )?An unknown git error|command git\b|"
         r"code (?:ETARGET|ERESOLVE|E404|EALLOWGIT)\b|git dep preparation failed)|Couldn't find the binary git|"
         r"\bprepareGitDep\b",
         "failure", "library_mismatch", None, 0.8, origin="runtime"),
    # V8 cannot parse a file of a dependency (caret under a node_modules line, then SyntaxError): the
    # installed library needs another Node.js or module system than the one running it
    Rule("dependency_syntax", r"node_modules[/\\][^\n]*:\d+\n(?:[^\n]*\n){0,3}?[ \t]*\^+[ \t]*\n\s*SyntaxError: ",
         "failure", "library_mismatch", None, 0.7, origin="node"),
    # the same, said by the module loader without the caret block (the file line was not kept): a SyntaxError
    # raised while Node loads modules is syntax this Node cannot parse, not a bug the bot runs into
    Rule("loader_syntax", r"\ASyntaxError: [^\n]*\n\s*at [^\n]*(?:moduleStrategy|esm[/\\]translators|wrapSafe|"
         r"compileSourceTextModule)", "failure", "library_mismatch", None, 0.55, origin="node"),
    # a dependency calls a method another package no longer (or not yet) has: caret under a node_modules
    # line, then `a.b is not a function`: the installed packages do not fit together
    Rule("dependency_api", r"node_modules[/\\][^\n]*:\d+\n(?:[^\n]*\n){0,3}?[ \t]*\^+[ \t]*\n\s*"
         r"TypeError: [\w$]+(?:\.[\w$]+)+ is not a (?:function|constructor)\b",
         "failure", "library_mismatch", None, 0.6, origin="node"),
    # the package manager says this Node.js is older than a package needs: a warning npm installs past, so
    # weak evidence, but the only one a log of a bot that then fails to run may carry
    Rule("engine_unsupported", r"\bEBADENGINE\b|Unsupported engine", "failure", "library_mismatch", None, 0.45,
         origin="runtime"),
    # a global the library uses is missing from this runtime (Web Crypto, fetch, streams arrived in later
    # Node.js releases): the installed library needs a newer Node.js, not a bug in the bot
    Rule("runtime_global_missing", r"\bReferenceError: (?:crypto|fetch|structuredClone|Blob|File|FormData|Headers|"
         r"Request|Response|ReadableStream|WritableStream|TransformStream|TextEncoder|TextDecoder|"
         r"AbortController|AbortSignal|WebSocket|BroadcastChannel|EventTarget|CustomEvent|DOMException|"
         r"navigator|performance) is not defined\b", "failure", "library_mismatch", None, 0.8, origin="node"),
    Rule("unstable", r"too many unstable restarts", "failure", "crash", None, 0.8, origin="pm2"),
    # bots print these from their own process.on(...) handler and keep running: weak on their own
    Rule("uncaught", r"Uncaught(?:Exception)?|unhandledRejection|Unhandled promise rejection|"
         r"triggerUncaughtException", "failure", "crash", None, 0.3, origin="node"),
    # -- the process died: node's fatal-exception trailer, its caret block, V8's OOM, the manager's exit line.
    # A bare `Error: ...` line is only noise: bots log errors they handled and keep running.
    Rule("node_fatal", r"^Node\.js v\d+\.\d+\.\d+\s*$", "failure", "crash", None, 0.5, origin="node"),
    Rule("caret_block", r":\d+\n.*\n\s*\^+\s*$", "failure", "crash", None, 0.5, origin="node"),
    # the error under the caret is Baileys' own Boom for the socket (a query timed out, a send on a closed
    # socket) that nobody caught: the connection is the cause, the exit follows from it
    Rule("socket_boom_at_caret", r"\^+[ \t]*\n\s*Error: (?:Timed Out|Connection Closed)\b", "failure", "network",
         None, 0.55, origin="node"),
    Rule("oom", r"heap out of memory|FatalProcessOutOfMemory|Last few GCs|JavaScript heap|"
         r"Reached heap limit|out of memory", "failure", "crash", None, 0.85, origin="node"),
    Rule("bot_exits", r"(?:clean ?up|shutting down|graceful(?:ly)?) before exit|^\W*(?:exiting|shutting down)"
         r"(?: now| the process| with code \d+)?\W*$|process\.exit\(\s*[1-9]", "failure", "crash", None, 0.45,
         origin="bot"),
    Rule("thrown", r"^(?:Uncaught )?[A-Z]?\w*Error(?: \[\w+\])?: ", "noise", origin="node"),
    # V8's own wording of a programming error (not a handled `Error:` a bot logs): code threw, in the library,
    # the store or the bot. Weak on its own: a connection open after it says the bot caught it and goes on.
    Rule("program_error", r"\b(?:TypeError|ReferenceError|RangeError): (?:Cannot (?:read|set) propert|"
         r"Cannot destructure|\S+ is not (?:a function|defined|iterable)|Maximum call stack)|"
         r"\b(?:TypeError|RangeError) \[ERR_INVALID_ARG_(?:TYPE|VALUE)\]: ",
         "failure", "crash", None, 0.4, origin="node"),
    # the bot calls an API the installed Baileys no longer exports (the in-memory store left in 6.7.17,
    # the single-file auth states and the legacy socket in 5.x): library and bot do not fit together
    Rule("removed_api", r"\b(?:makeInMemoryStore|useSingleFile(?:Legacy)?AuthState|makeWALegacySocket|"
         r"WAConnection)\b[^\n]{0,40}?(?:is not a (?:function|constructor)|n[aã]o [eé] uma fun[cç][aã]o|"
         r"no es una funci[oó]n)", "failure", "library_mismatch", None, 0.75, origin="node"),
    # the bot's import does not fit the installed Baileys (its default export or an entry point missing: an ESM
    # build required from CommonJS, a fork that exports differently): library and bot do not fit together
    Rule("entry_point_missing", r"\b(?:makeWASocket|useMultiFileAuthState|fetchLatestBaileysVersion|"
         r"makeCacheableSignalKeyStore)\b[^\n]{0,20}?is not a (?:function|constructor)\b",
         "failure", "library_mismatch", None, 0.7, origin="node"),
    # a native module built for another Node or platform (sharp on Termux, a binary from another machine)
    Rule("native_module_mismatch", r"NODE_MODULE_VERSION \d+|was compiled against a different Node\.js version|"
         r"invalid ELF header|Could not load the \"[\w@/.-]+\" module using the [\w-]+ runtime",
         "failure", "library_mismatch", None, 0.8, origin="node"),
    # a runtime other than Node that lacks what the socket library needs (Bun's ws shim)
    Rule("runtime_unsupported", r"is not implemented in bun\b", "failure", "library_mismatch", None, 0.8,
         origin="runtime"),
    # syntax newer than the Node running it (optional chaining, nullish operators) under a caret block:
    # the runtime is too old for the code, not a bug in it
    Rule("syntax_too_new", r"(?:\?\.|\?\?)[^\n]*\n[ \t]*\^+[ \t]*\n\s*SyntaxError: Unexpected token '?(?:\.|\?)",
         "failure", "library_mismatch", None, 0.7, origin="node"),
    # the process cannot listen on its port (a second instance, another service): it exits at start
    Rule("port_in_use", r"\bEADDRINUSE\b|address already in use", "failure", "crash", None, 0.7,
         origin="runtime"),
    # a host name built from an undefined value ("mmg.whatsapp.netundefined"): the code built a bad URL,
    # the name server is not at fault
    Rule("bad_host", r"(?:ENOTFOUND|EAI_AGAIN)\s+\S*?(?:undefined|null)\b", "failure", "crash", None, 0.8,
         origin="runtime"),
    # the logger (pino, Baileys' logger) refuses its level setting (LOG_BAILEYS=DEBUG): a configuration
    # error at start
    Rule("logger_level", r"default level:?\s*\S+ must be included in custom levels|unknown level \S+",
         "failure", "crash", None, 0.6, origin="runtime"),
    # a platform that kills the process: Heroku's memory quota errors and its dyno state line
    Rule("platform_memory", r"Error R1[45] \(Memory quota (?:vastly )?exceeded\)", "failure", "crash", None,
         0.8, origin="runtime"),
    Rule("platform_crashed", r"State changed from \w+ to crashed|Process exited with status [1-9]",
         "failure", "crash", None, 0.6, origin="runtime"),
    Rule("pm2_exit", r"exited with code \[?[1-9]|exited with code \[?\d+\]? via signal \[?SIG(?:KILL|ABRT|SEGV)",
         "failure", "crash", None, 0.5, origin="pm2"),
    Rule("systemd_exit", r"Main process exited, code=(?:exited|killed|dumped), status=(?!0/)|"
         r"Failed with result '(?:exit-code|signal|core-dump|oom-kill)'|start request repeated too quickly",
         "failure", "crash", None, 0.5, origin="systemd"),
    # -- needs a link: a QR nobody scanned is 408 but not a network fault
    Rule("qr_ended", r"QR refs attempts ended", "failure", "logged_out", 408, 0.9, origin="baileys",
         literal="QR refs attempts ended"),
    Rule("intentional_logout", r"Intentional Logout", "failure", "logged_out", 401, 0.85, origin="baileys",
         literal="Intentional Logout"),
    Rule("connection_failure", r"Connection Failure", "failure", "logged_out", 401, 0.5, origin="baileys",
         literal="Connection Failure"),
    # a Connection Failure the bot answers by reconnecting: Baileys' own example (and the bots copied from
    # it) reconnect exactly when the code is not loggedOut, so this failure node was no 401; without its
    # code, the common other reason is the server refusing the client's version (405). Only for a record
    # without a code: a code of its own decides.
    Rule("failure_reconnecting", r"Connection Failure(?:.|\n){0,1500}?\b(?:reconnect\w*|reconectar\w*|"
         r"reconectando)\b\W{0,4}(?:true\b|\.{3}|…)", "failure", "client_outdated", 405, 0.55, origin="bot",
         codeless=True),
    Rule("template_logged_out", r"Device Logged Out|logged ?out[.,!]? (?:please )?(?:scan|delete|pair)|"
         r"you(?:'re| are| have been) logged out|DisconnectReason\.loggedOut|\bloggedOut\b|"
         r"sess(?:ion|ão) (?:encerrada|desconectada)|"
         r"Unauthorized|not-authorized", "failure", "logged_out", 401, 0.8, origin="bot"),
    Rule("runbook_session", r"session.*expir|Expired session keys|device.*removed|authentication.*fail",
         "failure", "logged_out", 401, 0.55, origin="bot"),
    Rule("template_replaced", r"Connection Replaced|connectionReplaced|another (?:new )?session opened",
         "failure", "conflict", 440, 0.85, origin="bot"),
    Rule("template_bad_session", r"Bad Session File|\bbadSession\b", "failure", "corrupt_keys", 500, 0.6,
         origin="bot"),
    Rule("template_restart", r"Restart Required, Restarting|restartRequired", "failure", "restart_required",
         515, 0.7, origin="bot"),
    Rule("restart_text", r"Error: Restart Required\b|Stream Errored \(restart required\)", "failure",
         "restart_required", None, 0.7, origin="baileys", literal="restart required"),
    Rule("gone_410", r"\b410\b.{0,40}(?:Gone|Restart Required)|(?:Gone|Restart Required).{0,40}\b410\b",
         "failure", "restart_required", 410, 0.75, origin="baileys", literal="restart required"),
    Rule("template_lost", r"Connection Lost from Server|connectionLost", "failure", "network", 408, 0.7,
         origin="bot"),
    # the same template's line for DisconnectReason.connectionClosed (its other lines are above)
    Rule("template_closed", r"Connection closed, reconnecting\.{3,}", "failure", "network", 428, 0.5,
         origin="bot"),
    # the legacy WAConnection's close line names its reason
    Rule("legacy_replaced", r"closed connection, reason replaced", "failure", "conflict", 440, 0.85,
         origin="runtime"),
    Rule("legacy_lost", r"closed connection, reason lost\b", "failure", "network", 408, 0.7, origin="runtime"),
    # the legacy web protocol's command frame by which the phone unlinks this web session
    Rule("legacy_cmd_disconnect", r'\[\s*"Cmd"\s*,\s*\{\s*"type"\s*:\s*"disconnect"', "failure", "logged_out",
         401, 0.8, origin="runtime"),
    Rule("legacy_invalid_session", r"closed connection, reason invalid_session", "failure", "logged_out", 401,
         0.85, origin="runtime"),
    # -- rate limit / ban: change nothing on the session (429 in Boom data is not corrupt keys)
    Rule("rate_overlimit", r"\brate[-_ ]?over[-_ ]?limit|Too Many Requests|\bdata\W{0,4}429\b", "failure",
         "rate_limited", 429, 0.9, origin="peer"),
    # the server's IQ error for a query it will not serve now (thrown by assertNodeErrorFree like
    # rate-overlimit): unavailableService, back off and retry
    Rule("service_unavailable", r"\bservice-unavailable\b", "failure", "network", 503, 0.7, origin="peer"),
    Rule("banned_text", r"account (?:is |has been )?banned|number (?:is |has been )?banned|\bbanned\b.{0,30}whatsapp",
         "failure", "banned", 403, 0.7, origin="bot"),
    Rule("version_old", r"Method Not Allowed", "failure", "client_outdated", 405, 0.8, origin="peer"),
    # the web socket endpoint the library dials is gone (the legacy web client's): the library is too old
    Rule("endpoint_gone", r"Unexpected server response: 404", "failure", "client_outdated", None, 0.7,
         origin="runtime"),
    # -- the auth store: a corrupt file or database is broken local state; an unreachable DB is not
    # AuthFileCorruptError: the multi-file store's error since 2026, not yet in a release on the registry,
    # so no literal a contract could check: counted as the store's (runtime) text
    Rule("auth_file_corrupt", r"AuthFileCorruptError", "failure", "corrupt_keys", None, 0.8, origin="runtime"),
    Rule("creds_unreadable", r"creds\.json.{0,80}(?:Unexpected end of JSON|SyntaxError|ENOENT|corrupt)|"
         r"\bno creds\.json\b|creds\.json\W{0,6}(?:is |was |has been )?(?:gone|missing|deleted|lost)\b|"
         r"(?:Unexpected end of JSON|SyntaxError|AuthFileCorruptError)(?:.|\n){0,200}(?:creds\.json|"
         r"useSingleFileAuthState|use-single-file-auth-state|loadAuthInfo|auth_info\w*\.json)",
         "failure", "creds_lost", None, 0.85, origin="runtime"),
    Rule("sqlite_corrupt", r"SQLITE_CORRUPT|SQLITE_NOTADB|database disk image is malformed|file is not a database",
         "failure", "corrupt_keys", None, 0.8, origin="runtime"),
    Rule("sqlite_busy", r"SQLITE_BUSY|database is locked", "failure", "conflict", None, 0.6, origin="runtime"),
    Rule("pg_down", r"ECONNREFUSED\s+\S*:5432\b|connect ECONNREFUSED.{0,40}5432|"
         r"the database system is (?:starting up|shutting down)|Connection terminated unexpectedly|"
         r"Can't reach database server|\bP1001\b",
         "failure", "network", None, 0.8, origin="runtime"),
    # a product's own cache or store (Redis) it cannot keep a connection to
    Rule("cache_down", r"\bredis disconnected\b|Redis connection (?:error|lost|closed)", "failure", "network", None,
         0.6, origin="peer"),
    # a product's schema migration the database refuses (Prisma's P3xxx): the API does not start
    Rule("migration_refused", r"\bError: P3\d{3}\b|migrate found failed migrations", "failure", "crash", None,
         0.7, origin="runtime"),
    Rule("pg_auth", r"password authentication failed|no pg_hba\.conf entry|role \S+ does not exist|"
         r"database \S+ does not exist", "failure", "crash", None, 0.85, origin="runtime"),
    # -- network: DNS, TCP, TLS, websocket
    Rule("dns", r"ENOTFOUND|EAI_AGAIN|getaddrinfo", "failure", "network", 408, 0.75, origin="runtime"),
    Rule("tcp", r"ETIMEDOUT|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|socket hang up|ECONNABORTED",
         "failure", "network", 408, 0.7, origin="runtime"),
    Rule("tls", r"certificate|(?-i:\bTLS\b|\bSSL\b)|self[- ]signed|ERR_TLS|EPROTO", "failure", "network", 408, 0.65,
         origin="runtime"),
    Rule("ws_error", r"WebSocket Error", "failure", "network", 428, 0.5, origin="baileys",
         literal="WebSocket Error"),
    Rule("ws_terminated", r"Connection Terminated", "failure", "network", 428, 0.5, origin="baileys",
         literal="Connection Terminated"),
    # Baileys' Boom message, as Baileys writes it: a bot's own sentence ("connection closed, reconnecting",
    # "Web connection closed (status 440)") narrates a close whose reason is elsewhere, not a 428
    Rule("ws_closed", r"(?-i:Connection Closed)", "failure", "network", 428, 0.5, origin="baileys",
         literal="Connection Closed"),
    Rule("ws_lost", r"Connection was lost", "failure", "network", 408, 0.5, origin="baileys",
         literal="Connection was lost"),
    Rule("timed_out", r"Timed Out", "failure", "network", 408, 0.5, origin="baileys", literal="Timed Out"),
    Rule("keepalive", r"error in sending keep alive", "failure", "network", 408, 0.4, origin="baileys",
         literal="error in sending keep alive"),
    # a programming error thrown inside the Signal code (libsignal's ciphers, Baileys' group cipher and
    # sender-key state): the key store handed it a record it cannot use, the keys are broken, not the bot
    Rule("signal_state_error", r"\b(?:TypeError|RangeError): [^\n]*\n\s*at [^\n]*(?:libsignal|WASignalGroup|"
         r"Signal[/\\]Group|session_cipher|group_cipher|sender[-_]key)", "failure", "corrupt_keys", None, 0.6,
         origin="libsignal"),
    # -- signal sessions: any decryption error says the keys are broken; a burst says it loudly, one line
    # while the connection stays open is everyday noise (the planner acts only on a burst)
    Rule("bad_mac", _LIBSIGNAL, "flood", "corrupt_keys", 500, 0.8, min_count=10, origin="libsignal"),
    Rule("no_session", r"No open session|No session record|No matching sessions found|"
         r"Failed to decrypt message with any known session|No sessions?\b|isSessionRecordError", "support",
         "corrupt_keys", origin="libsignal"),
    # Baileys' own line for a message it could not decrypt (older wording: failure in decrypting): one of
    # the decryption errors, counted with libsignal's
    Rule("decrypt_failed", r"failed to decrypt message|failure in decrypting message", "flood", "corrupt_keys",
         500, 0.8, min_count=10, origin="baileys", literal="failed to decrypt message"),
    # the bot could not open a file of its own (a log folder, an upload directory) that is not a session key:
    # a setup fault that stops the bot where it was thrown. Weak: a bot may log it and go on.
    Rule("own_file_missing", r"ENOENT: no such file or directory, (?:open|mkdir|scandir|stat|lstat|rename|unlink|"
         r"copyfile) '(?![^'\n]*" + _KEY_FILE + r"')",
         "failure", "crash", None, 0.4, origin="runtime"),
    # a key the message needs is missing from the multi-file store (its file is gone): the message is not
    # decrypted, counted with the decryption errors
    Rule("key_file_missing", r"ENOENT\b[^\n]{0,240}\b(?:sender-key|session|pre-key)-[^\s'\"]*\.json", "flood",
         "corrupt_keys", 500, 0.8, min_count=10, origin="runtime"),
    # libsignal rotating a session: it does so only while messages flow, so the session is alive. It decides
    # nothing when anything else is in the window (a flood, a failure, a state)
    # Baileys' optional queries after login (privacy, blocklist, props) failing: the socket is logged in and
    # works; the Boom 500 dumped with it is not the server's badSession (the message is a template,
    # `unexpected error in '${msg}'`: the literal is the part the call site passes)
    Rule("init_queries_failed", r"unexpected error in 'init queries'", "alive", origin="baileys",
         literal="'init queries'"),
    Rule("prekey_bundle", r"Closing open session in favor of incoming prekey bundle", "alive", origin="libsignal"),
    Rule("session_rotation", r"Closing stale open session for new outgoing prekey bundle|"
         r"Closing session: SessionEntry|Removing old closed session", "alive", origin="libsignal"),
)

FLAGS = re.IGNORECASE | re.MULTILINE


class _Compiled:
    """(rule, compiled pattern) by index, each pattern compiled the first time a text needs it: most
    windows never run most rules, and compiling them all was a fifth of a one-host diagnose's start."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self._rules = rules
        self._rx: list[re.Pattern[str] | None] = [None] * len(rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __getitem__(self, k: int) -> tuple[Rule, re.Pattern[str]]:
        rx = self._rx[k]
        if rx is None:
            rx = self._rx[k] = re.compile(self._rules[k].pattern, FLAGS)
        return self._rules[k], rx

    def __iter__(self) -> Iterator[tuple[Rule, re.Pattern[str]]]:
        return (self[k] for k in range(len(self)))


COMPILED = _Compiled(LOG_RULES)
# Only rules whose literal anchors occur in a line run their regex (waops.prefilter): same result,
# a fraction of the cost on long pino lines.
_PREFILTER = Prefilter([r.pattern for r in LOG_RULES], FLAGS)


@dataclass(frozen=True)
class CodeRule:
    cause: str
    weight: float
    note: str


# WhatsApp status codes (Boom output.statusCode, `<failure reason="...">`), docs/DOMAIN.md's table.
CODES: dict[int, CodeRule] = {
    401: CodeRule("logged_out", 0.9, "loggedOut: the server revoked the device; only a new link fixes it"),
    402: CodeRule("rate_limited", 0.75, "temporary ban: change nothing, alert a person"),
    403: CodeRule("banned", 0.85, "forbidden: banned or blocked number; never auto-reset"),
    405: CodeRule("client_outdated", 0.85, "client version too old (Method Not Allowed)"),
    406: CodeRule("banned", 0.8, "banned"),
    408: CodeRule("network", 0.65, "connection lost / timed out"),
    409: CodeRule("client_outdated", 0.5, "bad user agent"),
    411: CodeRule("unknown", 0.4, "multi-device mismatch (client/account)"),
    428: CodeRule("network", 0.65, "connection closed: transport closed, usually network"),
    429: CodeRule("rate_limited", 0.9, "rate limited"),
    440: CodeRule("conflict", 0.9, "connection replaced: another socket uses these credentials"),
    410: CodeRule("restart_required", 0.7, "gone: the multi-device beta's restart required after pairing"),
    500: CodeRule("corrupt_keys", 0.45, "badSession: often corrupt keys, also used for other faults"),
    503: CodeRule("network", 0.55, "unavailable service: server backoff"),
    515: CodeRule("restart_required", 0.7, "restart required (normal right after pairing)"),
}

PAIRING_GRACE_RECORDS = 30  # a 515 within this many records after pairing is expected
# A rate limit hits while the connection stays open; a limit line older than this, with the connection
# open since, is over. Causes a bot can stop on by itself (never reconnects): a stopped process with one
# of them in its log keeps that cause; any other old log cause does not explain a stopped process.
RATE_LIMIT_RECENT_S = 1800
STOP_CAUSES = ("logged_out", "banned", "crash", "library_mismatch", "creds_lost")


@dataclass(frozen=True)
class Match:
    """What one record means: the heaviest rule (or code) that matched it."""

    kind: Kind
    cause: str | None
    code: int | None
    weight: float
    rule: str


def classify_record(rec: Record) -> list[Match]:
    """Every meaning of one record. A failure line yields one failure match (the heaviest). Computed
    once per record (the diagnosis asks several times); a record's text and code must not change after."""
    if rec.matches is not None:
        return list(rec.matches)
    key = (rec.text, rec.code, rec.conflict_type)
    got = _MEMO.get(key)
    if got is None:
        got = tuple(_classify(rec))
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()  # bounded: a long run of distinct lines starts the table afresh
        _MEMO[key] = got
    rec.matches = got
    return list(got)


# A record's meaning depends only on its text, code and conflict type: the same record seen again (a Bad
# MAC flood, a keep-alive line, one bot's window read again) is not classified again.
MEMO_SIZE = 8192
_MEMO: dict[tuple[str, int | None, str | None], tuple[Match, ...]] = {}


# A short status line that hedges ("possibly logged out", "maybe banned?") is the bot's guess at what
# happened, not a state: its failure words are noise beside what the library and the server said.
_HEDGE = re.compile(r"\b(?:possibly|probably|maybe|perhaps|might|may be|could be)\b", re.IGNORECASE)
HEDGE_MAX_LEN = 160


def _hedged(rec: Record) -> bool:
    t = rec.text
    return len(t) <= HEDGE_MAX_LEN and "\n" not in t and rec.source == "plain" and bool(_HEDGE.search(t))


def _classify(rec: Record) -> list[Match]:
    found: list[Match] = []
    best: Match | None = None
    guess = _hedged(rec)
    for k in _PREFILTER.candidates(rec.text):
        rule, rx = COMPILED[k]
        if (rule.codeless and rec.code is not None) or not rx.search(rec.text):
            continue
        if rule.kind == "failure" and guess:
            found.append(Match("noise", rule.cause, rec.code or rule.code, rule.weight, rule.name))
        elif rule.kind == "failure":
            m = Match("failure", rule.cause, _code(rec.code, rule), rule.weight, rule.name)
            if best is None or m.weight > best.weight:
                best = m
        else:
            found.append(Match(rule.kind, rule.cause, rec.code or rule.code, rule.weight, rule.name))
    if rec.code is not None and rec.code in CODES:
        cr = CODES[rec.code]
        m = Match("failure", cr.cause, rec.code, cr.weight, f"code_{rec.code}")
        if best is None or m.weight > best.weight:
            best = m
    if best is not None and not any(m.kind in ("open", "alive") for m in found):
        found.append(best)
    return found


def _code(found: int | None, rule: Rule) -> int | None:
    """The line's own code, unless it means another cause than the rule that names the line
    (a 500 carrying rate-overlimit is reported as 429)."""
    if found is None:
        return rule.code
    if rule.code is not None and found in CODES and CODES[found].cause != rule.cause:
        return rule.code
    return found


def rule(name: str) -> Rule:
    return next(r for r in LOG_RULES if r.name == name)
