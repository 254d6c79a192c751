"""waops.ops.waops_diagnose: the diagnosis and plan of one bot, inside Ansible.

Reads the host agent's facts on the target (`waops-host facts --bot BOT`, as root) and decides on the
controller with waops's own rules and decision table (waops.diagnose, waops.plan: imported, never copied,
so `waops recover` and this plugin always agree). Needs the waops Python package on the controller (or in
the execution environment); the target needs only the agent the waops_host role installs.

`pairing` (qr or code), `verify_timeout_s` and `link_timeout_s` are the plan options `waops recover` takes
from its flags. Returns `cause`, `code`, `diagnosis` (the whole diagnosis), `plan` (steps and fallbacks)
and `policy`: what an unattended run may do, `auto`, `ask` or `never`, from `policy` (the inventory's
waops_recover_policy, cause -> policy) or else the plan's default (auto without a person, ask when a
phone is needed, never when only a person can act).
"""

from __future__ import annotations

import json
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("bot", "facts", "agent", "policy", "started_at", "pairing", "verify_timeout_s",
                             "link_timeout_s"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        try:
            from waops.diagnose import diagnose
            from waops.model import SchemaError, parse_bot
            from waops.plan import POLICIES, PlanOptions, default_policy, make_plan
        except ImportError as e:
            raise AnsibleActionFail(f"waops_diagnose needs the waops Python package on the controller: {e}") from None
        args = self._task.args
        bot = str(args.get("bot") or "")
        if not bot:
            raise AnsibleActionFail("bot is required")
        doc = args.get("facts")
        if doc is None:
            agent = str(args.get("agent") or "/usr/local/bin/waops-host")
            res = self._execute_module(module_name="ansible.builtin.command",
                                       module_args={"argv": [agent, "facts", "--bot", bot]}, task_vars=task_vars)
            if res.get("rc") != 0:
                raise AnsibleActionFail(f"waops-host facts failed: {str(res.get('stderr') or res.get('msg'))[-500:]}")
            try:
                doc = json.loads(res["stdout"])
            except ValueError:
                raise AnsibleActionFail("waops-host facts printed no JSON") from None
        entries = doc.get("bots") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise AnsibleActionFail("the facts hold no `bots` list")
        try:  # the boundary: the bot's entry is typed here, or refused with the field that is wrong
            bots = [parse_bot(b, f"bots[{k}]") for k, b in enumerate(entries)
                    if isinstance(b, dict) and b.get("bot") == bot]
        except SchemaError as e:
            raise AnsibleActionFail(f"malformed facts: {e}") from None
        if not bots:
            raise AnsibleActionFail(f"the facts hold no bot {bot}")
        diagnosis = diagnose(bots[0])
        host = (task_vars or {}).get("inventory_hostname")
        options = PlanOptions(host=host, started_at=args.get("started_at") or diagnosis.started_at,
                              pairing="code" if args.get("pairing") == "code" else "qr",
                              verify_timeout_s=int(args.get("verify_timeout_s") or 120),
                              link_timeout_s=int(args.get("link_timeout_s") or 600))
        plan = make_plan(diagnosis, bot, options)
        wanted = (args.get("policy") or {}).get(diagnosis.cause)
        if wanted is not None and wanted not in POLICIES:
            raise AnsibleActionFail(f"policy for {diagnosis.cause} must be one of {', '.join(POLICIES)}, not {wanted}")
        result.update(changed=False, cause=diagnosis.cause, code=diagnosis.code, diagnosis=diagnosis.to_dict(),
                      plan=plan.to_dict(), policy=wanted or default_policy(plan))
        return result
