"""Provisioning beyond the default lab bot: two bots on one host (CONTRACTS.md "Inventory variables").

`shop` keeps its session in PostgreSQL and runs under systemd; `support` is deployed from a git
repository under pm2; node comes from the npm-registry archive into its own prefix. A new commit makes a
new release: the bot restarts on it and the local fact records the previous one for rollback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.lab.test_provision_support import bot_running, health, run_site, wait_until
from waops_lab import sandbox_bot_dir

pytestmark = pytest.mark.lab

LAB_NAME = "t-prov-src"
GIT = "git -c user.email=t@example.com -c user.name=t"
EXTRA_VARS = {
    "waops_node_method": "archive",
    "waops_node_prefix": "/opt/node-archive",
    "waops_bots": [
        {"name": "shop", "phone": "15550100071", "service_manager": "systemd", "auth_store": "postgres"},
        {"name": "support", "phone": "15550100072", "service_manager": "pm2",
         "source": {"type": "git", "url": "/srv/git/bot.git", "version": "main"}},
    ],
}


@pytest.fixture(scope="module")
def lab_host(tmp_path_factory) -> Iterator[tuple]:
    """One lab host holding a git repository of the sandbox bot, and the extra-vars file for site.yml."""
    import subprocess

    from tests.conftest import _lab, lab_available

    why = lab_available() or (None if sandbox_bot_dir().is_dir() else "the sandbox bot's source is missing")
    if why:
        pytest.skip(why)
    lab = _lab(LAB_NAME)
    try:
        inventory = lab.up(1, ("systemd",), log=lambda _m: None)
        host = lab.hosts()[0]
        lab.ssh(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q git >/dev/null", check=True, timeout=300)
        bot = sandbox_bot_dir()
        tar = subprocess.run(["tar", "-C", str(bot), "--exclude=./node_modules", "-cf", "-", "."],
                             check=True, capture_output=True).stdout
        subprocess.run(lab.ssh_argv(host, f"set -e; mkdir -p /srv/src; tar -C /srv/src -xf -; cd /srv/src; "
                                          f"git init -q -b main; git add -A; {GIT} commit -qm r1; "
                                          "git clone -q --bare /srv/src /srv/git/bot.git"),
                       input=tar, check=True, capture_output=True, timeout=60)
        extra = Path(tmp_path_factory.mktemp("vars")) / "vars.json"
        extra.write_text(json.dumps(EXTRA_VARS))
        yield lab, host, inventory, f"@{extra}"
    finally:
        lab.down(log=lambda _m: None)


def _fact(lab, host) -> dict:
    return json.loads(lab.ssh(host, "cat /etc/ansible/facts.d/waops_bot.fact", check=True))["bots"]


def test_two_bots_postgres_git_archive_node(lab_host) -> None:
    lab, host, inventory, extra = lab_host
    first = run_site(inventory, "-e", extra)
    assert first.rc == 0, first.tail()
    node = json.loads(lab.ssh(host, "cat /etc/ansible/facts.d/waops_node.fact", check=True))
    assert node["method"] == "archive" and node["version"].startswith("v20.")
    assert node["bin"].startswith("/opt/node-archive/")
    for bot, manager in (("shop", "systemd"), ("support", "pm2")):
        assert wait_until(lambda b=bot: health(lab, host, b).get("connection") == "open", 60), bot
        assert bot_running(lab, replace(host, service_manager=manager), bot), bot
    # postgres store: the password only in the root-only pgpass file, the agent sees the bot's rows
    assert lab.ssh(host, "stat -c '%U %a' /etc/waops/bots/shop.pgpass", check=True).strip() == "root 600"
    assert "postgres" in json.loads(lab.ssh(host, "cat /etc/waops/bots/shop.json", check=True))
    facts = json.loads(lab.ssh(host, "/usr/local/bin/waops-host facts --bot shop", check=True))
    assert facts["bots"][0]["auth"]["db"]["rows"] > 0
    assert lab.ssh(host, "test -e /etc/waops/bots/support.pgpass || echo absent").strip() == "absent"
    assert _fact(lab, host)["support"]["current"].split("-")[1].startswith("g")

    second = run_site(inventory, "-e", extra)
    assert second.rc == 0, second.tail()
    assert all(r["changed"] == 0 for r in second.recap().values()), second.tail(120)


def test_new_commit_is_a_new_release_and_the_bot_restarts_on_it(lab_host) -> None:
    lab, host, inventory, extra = lab_host
    before = _fact(lab, host)["support"]["current"]
    started = health(lab, host, "support").get("session_started_at")
    lab.ssh(host, f"cd /srv/src && echo change >> README.md && {GIT} commit -qam r2 && "
                  "git push -q /srv/git/bot.git main", check=True)
    run = run_site(inventory, "-e", extra)
    assert run.rc == 0, run.tail()
    fact = _fact(lab, host)["support"]
    assert fact["current"] != before and fact["previous"] == before
    assert set(fact["releases"]) == {before, fact["current"]}
    link = lab.ssh(host, "readlink /opt/waops/bots/support/current", check=True).strip()
    assert link == f"releases/{fact['current']}"
    assert wait_until(lambda: health(lab, host, "support").get("session_started_at") != started
                      and health(lab, host, "support").get("connection") == "open", 60)
