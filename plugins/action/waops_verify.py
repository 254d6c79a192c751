"""waops.ops.waops_verify: prove a bot works again after a repair, inside Ansible, with waops's own verify.

The same proof `waops recover` uses (waops.verify.wait_verified, imported, never copied): fresh facts from
the host agent (`waops-host facts --bot BOT`, as root) diagnosed by waops's rules say the connection is
open and nothing is wrong for a whole open window on one connection, then the inventory's round-trip hook
(`roundtrip_command`, the `waops_verify_roundtrip_command` a person's `waops recover` runs too) sends a test
message through the bot. `wait_for_link` waits for a new link first (after a reset): each new QR code or
pairing code the bot shows is sent to the operator's Telegram (`telegram`: api, token, chat_id, the host
check's alert channel) so a person can link the phone; the time the person took is `human_wait_s`.

Returns ok, detail, elapsed_s, human_wait_s, cause (the last diagnosis), moved_to (the cause the diagnosis
settled on instead, when it moved) and links_sent (how many link messages reached Telegram). Never fails on
an unproven bot (ok: false): the caller decides what comes next (the rollback chain).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def link_text(link: Any) -> str:
    """The message a person acts on: the pairing code to type, or the QR payload to render and scan."""
    where = f"{link.bot}@{link.host}" if link.host else link.bot
    if link.pairing_code:
        return (f"[waops] {where}: the session was reset and needs the phone. Pairing code: {link.pairing_code}\n"
                "WhatsApp > Settings > Linked devices > Link a device > Link with phone number instead, "
                "then type the code.")
    return (f"[waops] {where}: the session was reset and needs the phone. Scan this QR payload "
            f"(render it, e.g. `qrencode -t ansiutf8`): {link.qr}")


def send_telegram(conf: dict[str, Any], text: str, timeout: float = 10.0) -> str | None:
    """Post one message to the Bot API; the error (never the token) or None."""
    url = f"{str(conf.get('api') or 'https://api.telegram.org').rstrip('/')}/bot{conf['token']}/sendMessage"
    body = json.dumps({"chat_id": str(conf["chat_id"]), "text": text[:4000],
                       "disable_web_page_preview": True}).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "waops-recover"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            ok = json.loads(resp.read(1 << 16) or b"{}").get("ok") is True
        return None if ok else "telegram answered without ok=true"
    except urllib.error.HTTPError as e:
        return f"telegram: HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"telegram: {type(e).__name__}: {str(e).replace(str(conf['token']), '***')}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("bot", "agent", "timeout_s", "wait_for_link", "fixing", "roundtrip_command", "phone",
                             "telegram", "interval_s"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        try:
            from waops.diagnose import diagnose
            from waops.errors import UnreachableError
            from waops.model import SchemaError, parse_bot
            from waops.verify import BotState, command_round_trip, wait_verified
        except ImportError as e:
            raise AnsibleActionFail(f"waops_verify needs the waops Python package on the controller: {e}") from None
        args = self._task.args
        bot = str(args.get("bot") or "")
        if not bot:
            raise AnsibleActionFail("bot is required")
        if self._task.check_mode:
            result.update(changed=False, skipped=True, ok=True, msg="check mode: nothing to verify")
            return result
        agent = str(args.get("agent") or "/usr/local/bin/waops-host")
        host = str((task_vars or {}).get("inventory_hostname") or "")

        def probe() -> Any:
            res = self._execute_module(module_name="ansible.builtin.command",
                                       module_args={"argv": [agent, "facts", "--bot", bot]}, task_vars=task_vars)
            if res.get("rc") != 0:
                raise UnreachableError(f"waops-host facts: {str(res.get('stderr') or res.get('msg'))[-300:]}")
            try:
                doc = json.loads(res["stdout"])
            except ValueError:
                raise UnreachableError("waops-host facts printed no JSON") from None
            entry = next((b for b in doc.get("bots") or [] if isinstance(b, dict) and b.get("bot") == bot), None)
            if entry is None:
                raise UnreachableError(f"the facts hold no bot {bot}")
            try:
                facts = parse_bot(entry, f"{bot} facts")  # the one gate for facts, as the CLI's
            except SchemaError as e:
                raise UnreachableError(f"waops-host facts: {e}") from None
            return BotState(diagnose(facts), facts)

        telegram = args.get("telegram") or {}
        if not (telegram.get("token") and telegram.get("chat_id")):
            telegram = {}
        sent: list[str] = []
        errors: list[str] = []

        def on_link(link: Any) -> None:
            if not telegram:
                return
            err = send_telegram(telegram, link_text(link))
            (errors if err else sent).append(err or link.pairing_code or "qr")

        wait_for_link = bool(args.get("wait_for_link"))
        v = wait_verified(
            probe, timeout_s=float(args.get("timeout_s") or 120), host=host,
            round_trip=command_round_trip(str(args.get("roundtrip_command") or "") or None, host=host, bot=bot,
                                          phone=str(args.get("phone") or "") or None),
            wait_for_link=wait_for_link, on_link=on_link, interval_s=float(args.get("interval_s") or 2),
            fixing=None if wait_for_link else (str(args.get("fixing") or "") or None))
        last = v.last.diagnosis if v.last is not None else None
        result.update(changed=False, ok=v.ok, detail=v.detail, elapsed_s=round(v.elapsed_s, 1),
                      human_wait_s=round(v.human_wait_s, 1), cause=getattr(last, "cause", None),
                      moved_to=getattr(v, "moved_to", None), links_sent=len(sent), telegram_errors=errors)
        return result
