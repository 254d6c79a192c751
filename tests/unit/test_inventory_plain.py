"""The plain inventory reader gives the same hosts and variables as Ansible's loader, and hands
everything it does not cover to Ansible."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from waops import inventory
from waops.inventory import load
from waops.inventory_plain import NeedAnsible, read

REPO = Path(__file__).resolve().parents[2]


def _both(src: Path, patterns: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    # Ansible orders hosts of groups two levels down by a set's order: compare by name
    pats = patterns or ["all"]
    plain = sorted((asdict(h) for h in load(src, pats, reader="plain")), key=lambda h: h["name"])
    ansible = sorted((asdict(h) for h in load(src, pats, reader="ansible")), key=lambda h: h["name"])
    return plain, ansible


def _files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


TRICKY: dict[str, dict[str, str]] = {
    # children groups three deep; a child's inventory vars beat its parent's; host vars beat both
    "children": {"hosts.yml": (
        "all:\n  vars: {ansible_user: root, waops_service_manager: pm2}\n  children:\n"
        "    region:\n      vars: {ansible_user: ops, ansible_port: 2200}\n      children:\n"
        "        eu:\n          vars: {ansible_port: 2201}\n          hosts:\n"
        "            bot-a: {waops_bots: [{name: shop}]}\n"
        "            bot-b: {ansible_port: 2299, waops_bots: [{name: crm, auth_store: postgres}]}\n"
        "    other:\n      hosts:\n        bot-c: {ansible_host: 192.0.2.30}\n")},
    # group_vars files (even all's) beat every inventory-file group var; host_vars beat all; a dir of files
    "group_vars precedence": {
        "hosts.yml": ("all:\n  vars: {ansible_user: fromfile}\n  children:\n    bots:\n"
                      "      vars: {waops_service_manager: pm2, ansible_port: 2000}\n"
                      "      hosts: {bot-1: {}, bot-2: {ansible_user: hostinv}}\n"),
        "group_vars/all/10-main.yml": "ansible_user: gv-all\nansible_port: 1000\n",
        "group_vars/all/20-more.yaml": "waops_auth_store: postgres\n",
        "group_vars/all/notes.example": "ansible_user: ignored\n",
        "group_vars/bots.yml": "waops_service_manager: systemd\n",
        "host_vars/bot-2.yml": "waops_bots:\n  - {name: shop, pairing: code}\nansible_become: true\n",
    },
    # ranges: numeric with leading zeros, letters, steps, a port after the range
    "ranges": {"hosts.yml": (
        "all:\n  children:\n    web:\n      hosts:\n        web[01:03].example.com:\n"
        "        db-[a:c]:2222: {ansible_user: pg}\n        edge[0:8:4]:\n")},
    # INI: host line vars (literal_eval: ints, quoted strings), :vars, :children declared before use
    "ini": {"hosts.ini": (
        "bare ansible_host=192.0.2.1\n\n[fleet:children]\neu\nus\n\n[eu]\n"
        "eu-[1:2] ansible_port=2222 waops_bots=\"[{'name': 'shop'}]\"\n"
        "[us]\nus-1:2200 ansible_user='deploy' ansible_become=yes # a comment\n"
        "[fleet:vars]\nansible_user=fleet\nwaops_service_manager=systemd\n"
        "[all:vars]\nansible_ssh_common_args=-o UserKnownHostsFile=/srv/kh -o StrictHostKeyChecking=yes\n")},
    # a directory: YAML and INI files side by side, a subdirectory, ignored files
    "directory": {
        "10-hosts.yml": "all:\n  children:\n    bots:\n      hosts: {bot-1: {ansible_port: 2201}}\n",
        "20-more": "[bots]\nbot-2 ansible_port=2202\n[extra]\nbot-1\n",
        "sub/30-third.ini": "[extra]\nbot-3\n",
        "README.md": "# not an inventory\n",
        "group_vars/extra.yml": "ansible_user: extra\n",
        "group_vars/bots.yml": "ansible_user: bots\nansible_group_priority: 5\n",
    },
    # ansible_group_priority changes which same-depth group wins
    "priority": {"hosts.yml": (
        "all:\n  children:\n    a:\n      vars: {ansible_user: from-a, ansible_group_priority: 10}\n"
        "      hosts: {h: {}}\n    b:\n      vars: {ansible_user: from-b}\n      hosts: {h: {}}\n")},
}


@pytest.mark.parametrize("case", sorted(TRICKY))
def test_plain_reader_matches_ansible(tmp_path: Path, case: str) -> None:
    root = _files(tmp_path / "inv", TRICKY[case])
    files = TRICKY[case]
    src = root if len(files) > 1 else root / next(iter(files))
    plain, ansible = _both(src)
    assert plain == ansible
    assert len(plain) >= 1


def test_plain_reader_matches_ansible_on_host_and_group_patterns(tmp_path: Path) -> None:
    root = _files(tmp_path / "inv", TRICKY["children"])
    for pats in (["eu"], ["bot-c"], ["region", "other"], ["bot-*"], ["eu:other"]):
        plain, ansible = _both(root / "hosts.yml", pats)
        assert plain == ansible, pats


def test_repo_inventories_read_the_same(tmp_path: Path) -> None:
    for name in ("example", "sandbox"):
        src = REPO / "inventories" / name
        if name == "sandbox":  # the lab writes its hosts beside the shared group_vars
            src = _files(tmp_path / "sandbox", {
                "hosts.yml": "all:\n  children:\n    waops_bot_hosts:\n      hosts:\n"
                             "        lab-1: {ansible_host: 10.77.0.2, waops_bots: [{name: shop}]}\n"})
            (src / "group_vars").symlink_to(REPO / "lab" / "waops_lab" / "inventory" / "group_vars")
        plain, ansible = _both(src)
        assert plain == ansible and plain, name


def test_auto_takes_the_plain_path_and_says_so(tmp_path: Path) -> None:
    root = _files(tmp_path / "inv", TRICKY["children"])
    load(root / "hosts.yml")
    assert inventory.last_read.reader == "plain"


@pytest.mark.parametrize("files, why", [
    ({"hosts.yml": "all:\n  hosts:\n    h: {ansible_user: '{{ who }}', who: admin}\n"}, "templated"),
    ({"hosts.yml": "plugin: constructed\n"}, "plugin"),
    ({"hosts.yml": "all:\n  hosts:\n    h:\n      ansible_password: !vault |\n"
                   "          $ANSIBLE_VAULT;1.1;AES256\n          3132\n"}, "vaulted"),
    ({"hosts.yml": "$ANSIBLE_VAULT;1.1;AES256\n6162\n"}, "vault-encrypted"),
    ({"hosts.toml": "[all]\n"}, "not a .yml"),
])
def test_what_the_plain_reader_leaves_to_ansible(tmp_path: Path, files: dict[str, str], why: str) -> None:
    root = _files(tmp_path / "inv", files)
    with pytest.raises(NeedAnsible, match=why):
        load(root / next(iter(files)), reader="plain")


def test_script_inventory_goes_to_ansible(tmp_path: Path) -> None:
    script = tmp_path / "inv.py"
    script.write_text("#!/bin/sh\necho '{\"bots\": {\"hosts\": [\"s-1\"]}, \"_meta\": {\"hostvars\": {}}}'\n")
    os.chmod(script, 0o755)
    with pytest.raises(NeedAnsible, match="script"):
        read(script)
    assert [h.name for h in load(script)] == ["s-1"]
    assert inventory.last_read.reader == "ansible" and "script" in inventory.last_read.why


def test_show_settings_says_which_reader(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from waops.cli import cli

    root = _files(tmp_path / "inv", TRICKY["children"])
    r = CliRunner().invoke(cli, ["diagnose", "-i", str(root / "hosts.yml"), "--show-settings"])
    assert "inventory reader = 'plain'" in r.output, r.output
    (root / "more.yml").write_text("plugin: constructed\n")
    r = CliRunner().invoke(cli, ["diagnose", "-i", str(root), "--show-settings"])
    assert "inventory reader = 'ansible': " in r.output and "plugin" in r.output, r.output


def test_unchanged_yaml_is_read_again_without_the_yaml_library(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setenv("WAOPS_YAML_CACHE", str(tmp_path / "cache"))
    src = _files(tmp_path / "inv", {"hosts.yml": "all:\n  hosts:\n    bot-1:\n      ansible_host: 192.0.2.10\n"})
    first = [asdict(h) for h in load(src, ["all"], reader="plain")]
    assert list((tmp_path / "cache").glob("*.json")), "a parsed document is kept"
    monkeypatch.setitem(sys.modules, "yaml", None)  # any `import yaml` now fails
    assert [asdict(h) for h in load(src, ["all"], reader="plain")] == first
    (src / "hosts.yml").write_text("all:\n  hosts:\n    bot-2:\n      ansible_host: 192.0.2.11\n")
    with pytest.raises(ImportError):  # edited text is a new key: parsed again, not served stale
        load(src, ["all"], reader="plain")
