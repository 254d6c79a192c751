"""The one ending of a store change (`waops migrate`, `waops manage`): what it prints and how it exits."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from waops.cli.app import App
from waops.cli.migrate import finish
from waops.errors import ExitCode


@dataclass
class Edit:
    edit: str
    written: bool

    def to_dict(self) -> dict:
        return {"edit": self.edit, "written": self.written}


@dataclass
class Result:
    exit_code: int


def ending(app: App, res: Result, edit: Edit | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        finish(app, res, {"outcome": "x", "inventory": edit.to_dict() if edit else None}, edit, "bot1/shop: x")
    out, err = capsys.readouterr()
    return int(ended.value.code), out, err


def test_an_inventory_that_could_not_take_the_change_needs_a_person(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ending(App(), Result(0), Edit("auth_store: sqlite", written=False), capsys)
    assert code == ExitCode.NEEDS_HUMAN
    assert "inventory NOT updated, do it by hand before the next provision: auth_store: sqlite" in err


def test_a_written_change_exits_with_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ending(App(), Result(0), Edit("auth_store: sqlite", written=True), capsys)
    assert code == 0 and "inventory updated: auth_store: sqlite" in err
    code, _, err = ending(App(), Result(1), None, capsys)
    assert code == 1 and "inventory" not in err and "bot1/shop: x" in err


def test_json_output_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    app = App()
    app.set("output", "json")
    code, out, _ = ending(app, Result(0), Edit("e", written=True), capsys)
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == 1 and doc["results"][0]["inventory"] == {"edit": "e", "written": True}
