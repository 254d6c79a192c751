"""`waops incidents list|show` through Click's CliRunner, on a real SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from waops.cli import cli
from waops.errors import UsageError
from waops.incidents import connect

T0 = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "incidents.db")
    with connect(path) as s:
        a = s.open(host="lab-1", bot="shop", cause="corrupt_keys", code=500, started_at=T0,
                   evidence=["[libsignal] Session error:Error: Bad MAC"])  # fmt: skip
        s.add_step(a, name="prune_keys", started_at=T0 + timedelta(minutes=1),
                   ended_at=T0 + timedelta(minutes=2), result="ok", detail="dropped 3")  # fmt: skip
        s.close(a, "resolved", T0 + timedelta(minutes=5))
        s.open(host="lab-2", bot="news", cause="logged_out", code=401, started_at=T0 + timedelta(hours=1))
    return path


def test_list_json(db: str) -> None:
    result = CliRunner().invoke(cli, ["incidents", "list", "--store", db, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [i["bot"] for i in doc] == ["news", "shop"]
    assert doc[1]["mttr_s"] == 300 and doc[0]["outcome"] is None


def test_list_filters(db: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["incidents", "list", "--store", db, "-o", "json", "--open"])
    assert [i["cause"] for i in json.loads(result.stdout)] == ["logged_out"]
    result = runner.invoke(cli, ["incidents", "list", "--store", db, "-o", "json", "--outcome", "resolved"])
    assert [i["cause"] for i in json.loads(result.stdout)] == ["corrupt_keys"]
    result = runner.invoke(cli, ["incidents", "list", "--store", db, "-o", "json", "--since", "2026-01-10T03:30"])
    assert [i["cause"] for i in json.loads(result.stdout)] == ["logged_out"]
    result = runner.invoke(cli, ["incidents", "list", "--store", db, "--since", "yesterday-ish"])
    assert isinstance(result.exception, UsageError)


def test_list_table_goes_to_stderr(db: str) -> None:
    result = CliRunner().invoke(cli, ["incidents", "list"], env={"WAOPS_STORE": db, "COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "corrupt_keys" in result.stderr and "open" in result.stderr


def test_show(db: str) -> None:
    runner = CliRunner()
    doc = json.loads(runner.invoke(cli, ["incidents", "show", "1", "--store", db, "-o", "json"]).stdout)
    assert doc["steps"][0]["name"] == "prune_keys" and doc["steps"][0]["detail"] == "dropped 3"
    result = runner.invoke(cli, ["incidents", "show", "1", "--store", db], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and result.stdout == ""
    assert "prune_keys" in result.stderr
    assert "[libsignal] Session error" in result.stderr  # brackets printed, not eaten as markup
    missing = runner.invoke(cli, ["incidents", "show", "42", "--store", db])
    assert isinstance(missing.exception, UsageError)


def test_commands_are_registered() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "incidents" in result.output and "mttr" in result.output
