"""`waops adopt`: what the host probe found becomes inventory entries (checked by waops.adoption), with
vault placeholders for secrets and comments for the choices a person confirms."""

from __future__ import annotations

import yaml

from waops.adopt import propose, render

FOUND = {"schema": 1, "host": "bot1", "bots": [
    {"manager": "pm2", "name": "baileys-whatsapp-service", "user": "root", "pm2_home": "/root/.pm2",
     "workdir": "/root/baileys-whatsapp-service", "running": True, "library": "@whiskeysockets/baileys",
     "version": "6.7.18", "git": True, "folders": ["/root/.baileys_auth_info", "/root/app/auth_old"],
     "logs": {"out": "/root/.pm2/logs/baileys-whatsapp-service-out.log"},
     "databases": [{"variable": "DATABASE_URL", "from": "the process environment", "sslmode": "prefer",
                    "tables": [{"table": "other_auth", "key_column": "key", "value_column": "value",
                                "scopes": [{"kind": "table"}], "named_in_code": False},
                               {"table": "wa_sessions", "key_column": "k", "value_column": "v", "rows": 80,
                                "scopes": [{"kind": "column", "column": "session", "value": "main"},
                                           {"kind": "column", "column": "session", "value": "support"}],
                                "named_in_code": True}]}]},
    {"manager": "systemd", "name": "support-bot.service", "user": "bot", "pm2_home": None, "workdir": "/srv/support",
     "running": False, "library": "baileys", "version": None, "git": False, "folders": [], "logs": {},
     "databases": []},
]}


def test_entries_vault_placeholders_and_notes() -> None:
    props = propose(FOUND)
    text = render("bot1", props)
    doc = yaml.safe_load(text)
    main, support = doc["waops_bots"]
    assert main["service"] == {"manager": "pm2", "app": "baileys-whatsapp-service", "pm2_home": "/root/.pm2",
                               "user": "root"}
    assert main["auth"]["folder"] == "/root/.baileys_auth_info"
    pg = main["auth"]["postgres"]
    assert (pg["table"], pg["key_column"], pg["rows"]) == ("wa_sessions", "k", {"column": "session", "value": "main"})
    assert pg["dsn"] == "{{ vault_baileys_whatsapp_service_pg_dsn }}"
    assert main["library_package"] == "@whiskeysockets/baileys" and main["library_expected"] == "6.7.18"
    assert "# vault: vault_baileys_whatsapp_service_pg_dsn: the value of DATABASE_URL" in text
    assert "sslmode=require" in text and "/root/app/auth_old" in text and "other_auth" in text
    assert '"value": "support"' in text  # the other bot's scope is named for a person to choose
    assert support["name"] == "support-bot-service" and support["service"]["unit"] == "support-bot.service"
    assert "no auth folder or auth table found" in text and "NOT running now" in text
    assert "support-bot-service: incomplete, fill in before provisioning" in text
