"""inventory: YAML, INI, directories with group_vars, vault, patterns and clear errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from waops.errors import UsageError
from waops.inventory import load


def test_yaml_with_templated_vars_and_bots(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  vars:\n    ansible_user: '{{ who }}'\n    who: admin\n    waops_service_manager: systemd\n"
        "    ansible_ssh_private_key_file: ~/.ssh/id_lab\n"
        "    ansible_ssh_common_args: '-o UserKnownHostsFile=/srv/lab/known_hosts -o StrictHostKeyChecking=yes'\n"
        "  children:\n    bots:\n      hosts:\n"
        "        bot-1: {ansible_host: 192.0.2.10, ansible_port: 2222, waops_bots: [{name: shop}, "
        "{name: crm, service_manager: pm2, auth_store: postgres}]}\n"
        "        bot-2: {ansible_host: 192.0.2.11}\n")
    hosts = load(inv)
    h1 = next(h for h in hosts if h.name == "bot-1")
    assert (h1.address, h1.port, h1.user) == ("192.0.2.10", 2222, "admin")
    assert h1.key_file is not None and h1.key_file.endswith("/.ssh/id_lab") and "~" not in h1.key_file
    assert h1.known_hosts == ["/srv/lab/known_hosts"]
    assert [(b.name, b.service_manager, b.auth_store) for b in h1.bots] == [
        ("shop", "systemd", "files"), ("crm", "pm2", "postgres")]
    assert [h.name for h in load(inv, ["bot-2"])] == ["bot-2"]
    assert {h.name for h in load(inv, ["bots"])} == {"bot-1", "bot-2"}


def test_ini_file(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[bots]\nbot-3 ansible_host=192.0.2.12 ansible_user=deploy waops_known_hosts_file=/tmp/kh\n")
    (h,) = load(inv)
    assert (h.address, h.user, h.known_hosts, h.bots) == ("192.0.2.12", "deploy", ["/tmp/kh"], [])


def test_directory_with_vaulted_group_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "prod"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    bot-1: {ansible_host: 192.0.2.10}\n")
    pw = tmp_path / "vault-pass"
    pw.write_text("correct horse\n")
    vaulted = subprocess.run(["ansible-vault", "encrypt_string", "--vault-password-file", str(pw), "s3cret",
                              "--name", "ansible_password"], capture_output=True, text=True, check=True).stdout
    (inv / "group_vars" / "all" / "vault.yml").write_text(vaulted)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(pw))
    (h,) = load(inv)
    assert h.password == "s3cret"
    assert "s3cret" not in repr(h) and "password" not in h.public()


@pytest.mark.parametrize("content, match", [
    ("all:\n  hosts: [unclosed\n", "malformed inventory"),
    ("all:\n  hosts:\n    h: {waops_bots: nope}\n", "waops_bots must be a list"),
    ("all:\n  hosts:\n    h: {waops_bots: [{name: 'Bad Name'}]}\n", "must match"),
    ("all:\n  hosts:\n    h: {ansible_port: http}\n", "ansible_port"),
])
def test_malformed_inventory_is_a_usage_error(tmp_path: Path, content: str, match: str) -> None:
    inv = tmp_path / "bad.yml"
    inv.write_text(content)
    with pytest.raises(UsageError, match=match):
        load(inv)


def test_missing_inventory_and_unknown_host(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load(tmp_path / "nope")
    inv = tmp_path / "h.yml"
    inv.write_text("all:\n  hosts:\n    a: {}\n")
    with pytest.raises(UsageError, match="no host"):
        load(inv, ["zzz"])
