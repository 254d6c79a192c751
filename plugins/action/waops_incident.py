"""waops.ops.waops_incident: record a repair in waops's incident store (the same store `waops incidents`
and `waops mttr report` read: WAOPS_STORE, a path or a PostgreSQL DSN, else the default SQLite file).

`state: open` records a new incident (host, bot, cause, code, started_at, trigger: operator|auto,
evidence) and returns its `id`; `state: closed` closes `id` with an `outcome` and adds `steps`
([{name, started_at, ended_at, result, detail}]); `resolved_at` (default: now, for a repaired bot) and
`human_wait_s` (the time a person took to link the phone, left out of the MTTR) go with it.
Runs on the controller with waops's own store module.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    from waops.incidents import now

    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=now().tzinfo)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("state", "store", "id", "host", "bot", "cause", "code", "started_at", "trigger",
                             "evidence", "outcome", "steps", "human_wait_s", "resolved_at"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        try:
            from waops.incidents import connect, now
        except ImportError as e:
            raise AnsibleActionFail(f"waops_incident needs the waops Python package on the controller: {e}") from None
        a = self._task.args
        store = a.get("store") or os.environ.get("WAOPS_STORE") or None
        if self._task.check_mode:
            result.update(changed=False, skipped=True, msg="check mode: nothing recorded")
            return result
        with connect(store) as s:
            if a.get("state", "open") == "open":
                iid = s.open(host=str(a.get("host") or (task_vars or {}).get("inventory_hostname")),
                             bot=str(a["bot"]), cause=str(a["cause"]),
                             code=int(a["code"]) if a.get("code") not in (None, "") else None,
                             started_at=_time(a.get("started_at")) or now(), evidence=list(a.get("evidence") or []),
                             trigger=str(a.get("trigger") or "operator"))
                result.update(changed=True, id=iid)
            else:
                iid = int(a["id"])
                for step in a.get("steps") or []:
                    s.add_step(iid, name=str(step["name"]), started_at=_time(step.get("started_at")) or now(),
                               ended_at=_time(step.get("ended_at")), result=str(step.get("result") or ""),
                               detail=str(step.get("detail") or ""))
                wait = a.get("human_wait_s")
                s.close(iid, str(a["outcome"]), _time(a.get("resolved_at")),
                        human_wait_s=float(wait) if wait not in (None, "") else None)
                result.update(changed=True, id=iid)
        return result
