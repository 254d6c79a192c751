"""WhatsApp simulator: the server-side truth the sandbox bot talks to (WhatsApp cannot be reached here).

Run: ``python -m waops_lab.sandbox serve --listen 10.77.0.1:7800 --control 127.0.0.1:7801 --state FILE
--link-delay 2 --clock-speed 1``. The state (phones, linked devices, ratchets, faults, sessions) is
persisted to FILE, so a restart keeps linked devices.

Bot protocol: TCP, one JSON object per line, see ``waops_lab.sandbox.server`` (the sandbox's fake ``baileys``
library under ``bot/vendor/`` speaks it).

Control API (HTTP JSON; bodies are JSON objects; errors are ``{"error": ...}`` with 400/404/409/504):

- ``GET  /status``                      clock, config, every phone's view, open connections
- ``GET  /phones/<phone>``              devices (ratchets, pre-keys, connected), active faults, pending link
- ``GET  /phones/<phone>/events``       the phone's last 500 events (qr, linked, open, replaced, fault...)
- ``POST /phones/<phone>/fault``        ``{"cause": C, ...params}``; C is one of
    ``logged_out`` (device removed server-side: 401 stream error ``conflict type=device_removed``),
    ``corrupt_keys`` (server ratchet jumps ahead: ``Bad MAC``; params ``step``, ``burst``, ``contact``),
    ``network`` (open sockets dropped -> 428, new ones get no answer -> 408, until cleared),
    ``banned`` (``code`` 403 default, 402 temporary, 406), ``rate_limited`` (sends fail with 429
    ``rate-overlimit``; ``provoke`` sends a "test" first), ``client_outdated`` (minimum version
    ``min_version``, default: one patch above the bot's -> 405), ``file_bloat`` (pre-key and sender-key
    floods until the bot has written about ``count`` key files, default 2000), ``clear``
- ``POST /phones/<phone>/clear``        lifts network, banned, rate_limited and client_outdated
- ``POST /phones/<phone>/link``         the phone scans the waiting QR or types the pairing code now
- ``POST /phones/<phone>/message``      ``{"text": T, "timeout": S, "contact": JID?}`` -> ``{"reply": ...}``
  (504 when the bot does not answer in time)
- ``GET  /sessions``                    session lifetimes: phone, device, start/end (sim time), real times,
  close code and reason, had_keepalive (a presence update was seen during the session); open
  sessions come last with ``end`` null
- ``GET  /lifetimes``                   linked-device lifetimes: phone, device, linked_at, end (removal, sim
  time; null while linked), lifetime_s, reason (``inactivity`` for the 14-day logout, ``device_removed``,
  ...), presences (keep-alives sent over the device's life), keepalive (any)
- ``GET  /clock``; ``POST /clock/advance`` ``{"seconds": S}``; ``POST /clock/speed`` ``{"speed": X}``
- ``POST /auto-link`` ``{"enabled": B, "delay": S}``: the phone links by itself S seconds after a QR
  or pairing code appears
- ``POST /config`` ``{"inactivity_days": D, "presence_counts_as_activity": B, "default_min_version": V}``

Python callers use ``waops_lab.sandbox.client.SimulatorClient``.
"""
