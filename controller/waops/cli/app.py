"""The application object every command finds in `ctx.obj`: the global options, resolved once.

`waops -i INV diagnose --all` and `waops diagnose -i INV --all` both work: the group and each command
take the same global options (declared here, once); a value given after the subcommand wins over one
given before it. Settings (waops.config) are loaded once, on first use, from those flags, the WAOPS_*
environment and waops.toml. Commands read `app.settings`, `app.inventory()`, `app.output`, `app.store`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from waops import config

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    flags: dict[str, Any] = field(default_factory=dict)
    # How diagnose reaches a host (waops.probe.ssh_factory unless a test passes its own).
    transport_factory: Callable[..., Any] | None = None
    _settings: config.Settings | None = field(default=None, repr=False)

    def set(self, name: str, value: Any) -> None:
        if value is not None:
            self.flags[name] = value
            self._settings = None

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.load(self.flags)
        return self._settings

    def inventory(self) -> str:
        """The inventory to act on; exit 2 naming the places looked in when there is none."""
        return config.require_inventory(self.settings)

    @property
    def output(self) -> str:
        return self.settings.output

    @property
    def store(self) -> str | None:
        """Incident store from --store or WAOPS_STORE; None: waops.incidents' default."""
        return self.flags.get("store")


def get_app(ctx: click.Context) -> App:
    app = ctx.find_object(App)
    if app is None:  # a command invoked on its own (tests): give it a fresh application
        root = ctx.find_root()
        extra = root.obj if isinstance(root.obj, dict) else {}
        app = App(transport_factory=extra.get("transport_factory"))
        root.obj = app
    return app


def make_app(obj: Any) -> App:
    """The group's application; tests may pass `obj={"transport_factory": ...}`."""
    if isinstance(obj, App):
        return obj
    extra = obj if isinstance(obj, dict) else {}
    return App(transport_factory=extra.get("transport_factory"))


def _store_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    get_app(ctx).set(param.name or "", value)
    return value


# name -> (param decls, click.option keyword arguments)
GLOBAL_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "inventory": (("-i", "--inventory"), {"metavar": "PATH",
                  "help": "Ansible inventory file or directory [env WAOPS_INVENTORY; waops.toml `inventory`]."}),
    "output": (("-o", "--output"), {"type": click.Choice(["table", "json"]),
               "help": "table (stderr) or json (stdout) [env WAOPS_OUTPUT]."}),
    "timeout": (("--timeout",), {"type": float, "metavar": "S",
                "help": "Hard deadline per host probe, seconds [env WAOPS_TIMEOUT]."}),
    "concurrency": (("--concurrency",), {"type": int, "metavar": "N",
                    "help": "Hosts probed at once [env WAOPS_CONCURRENCY]."}),
    "store": (("--store",), {"envvar": "WAOPS_STORE", "metavar": "PATH|DSN",
              "help": "Incident store: SQLite path or postgresql:// DSN [env WAOPS_STORE; "
                      "default $XDG_STATE_HOME/waops/incidents.db]."}),
}


def global_options(*names: str) -> Callable[[F], F]:
    """Add the named global options (all when none named) to a command or the group. Their values go to
    the App, not to the function's arguments."""

    def deco(f: F) -> F:
        for name in reversed(names or tuple(GLOBAL_OPTIONS)):
            decls, kw = GLOBAL_OPTIONS[name]
            f = click.option(*decls, name, default=None, expose_value=False, callback=_store_flag,
                             is_eager=True, **kw)(f)
        return f

    return deco


def pass_app(f: F) -> F:
    """Pass the App as the first argument (made on the spot when the command runs without the group)."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return ctx.invoke(f, get_app(ctx), *args, **kwargs)

    return functools.update_wrapper(wrapper, f)  # type: ignore[return-value]
