"""Reading the sources (flags, the environment, a TOML file) and resolving the
settings by precedence; ``--print-config``'s output."""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ..server import ServerConfig
from .table import ALL, BUS, BY_ENV, BY_NAME, CONFIG_ENV, PREFIX, SERVE, ServeOptions, Setting

__all__ = ["Given", "Settings", "SettingsError", "load"]


class SettingsError(Exception):
    """A setting is unknown or its value is bad; the message says which, where it
    came from and why, in one line."""


Source = Literal["flag", "env", "file", "app", "default"]


@attrs.frozen
class Given:
    """A setting's value, and where it came from."""

    value: Any
    source: Source
    #: The flag, the variable or the file; empty for the app and the default.
    where: str = ""
    #: The TOML table and key, for a file.
    key: str = ""

    def describe(self) -> str:
        """Where it came from, for an error message."""
        if self.source == "file":
            return f"{self.where}: {self.key}"
        return self.where or f"the {self.source}"

    def comment(self) -> str:
        """Where it came from, for ``--print-config``."""
        return f"{self.source} {self.where}".rstrip()


def _parsed(setting: Setting, parse: Callable[[Any], Any], given: Given) -> Given:
    """``given`` with its raw value parsed (by ``parse``, a method of its kind)."""
    try:
        return attrs.evolve(given, value=parse(given.value))
    except ValueError as exc:
        raise SettingsError(f"{given.describe()}: {setting.name} {exc}") from None


def _from_flags(args: argparse.Namespace) -> dict[str, Given]:
    found = {}
    for setting in ALL:
        value = getattr(args, setting.name, None)
        if value is None:
            continue
        if isinstance(value, bool):  # BooleanOptionalAction gives the bool itself
            found[setting.name] = Given(value, "flag", setting.flag if value
                                        else setting.flag.replace("--", "--no-", 1))
        else:
            found[setting.name] = _parsed(setting, setting.kind.parse,
                                          Given(value, "flag", setting.flag))
    return found


def _from_environ(environ: Mapping[str, str]) -> dict[str, Given]:
    found = {}
    unknown = []
    for name, text in sorted(environ.items()):
        setting = BY_ENV.get(name)
        if setting is not None:
            found[setting.name] = _parsed(setting, setting.kind.parse, Given(text, "env", name))
        elif name != CONFIG_ENV and name.upper().startswith(PREFIX):
            near = _near(name.upper()[len(PREFIX):], [s.name.upper() for s in ALL]
                         + [CONFIG_ENV[len(PREFIX):]])
            if near is not None:
                unknown.append(f"{name} (did you mean {PREFIX}{near}?)")
    if unknown:
        raise SettingsError(f"unknown environment variable{'s' * (len(unknown) > 1)}: "
                            + ", ".join(unknown))
    return found


def _near(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that ``name`` looks like a misspelling or a guess of.

    Only names that look like settings count (others, such as an app's own
    ``EVENTBUS_TEST_REDIS``, are none of our business): one within a typo of a
    setting's name (``PING_INTERVALL``, ``LOGLEVEL``, ``port``), or a setting's
    name with more words after it (``REDIS_URL``). Case does not matter.
    """
    by_folded = {known.lower(): known for known in names}
    folded = name.lower()
    for known in by_folded:
        if folded == known or folded.startswith(known + "_"):
            return by_folded[known]
    close = difflib.get_close_matches(folded, by_folded, n=1, cutoff=0.8)
    return by_folded[close[0]] if close else None


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file: "
                            f"{exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def _from_file(path: str) -> dict[str, Given]:
    data = _read_file(path)
    tables = {"serve": SERVE, "bus": BUS}
    found = {}
    unknown = []
    for table, entries in data.items():
        if table in tables and not isinstance(entries, dict):
            raise SettingsError(f"{path}: {table} must be a table ([{table}]), not "
                                f"{entries!r}")
        if table not in tables:
            setting = BY_NAME.get(table)
            near = _near(table, tables)
            hint = (f"put it in [{setting.table}]" if setting
                    else f"did you mean [{near}]?" if near
                    else "the tables are [serve] and [bus]")
            unknown.append(f"{table} ({hint})")
            continue
        names = {setting.name: setting for setting in tables[table]}
        for key, value in entries.items():
            setting = names.get(key)
            if setting is None:
                other = BY_NAME.get(key.replace("-", "_"))
                near = _near(key.replace("-", "_"), names)
                hint = (f" (it is [{other.table}] {other.name})" if other
                        else f" (did you mean {near}?)" if near else "")
                unknown.append(f"[{table}] {key}{hint}")
                continue
            given = Given(value, "file", path, f"[{table}] {key}")
            found[key] = _parsed(setting, setting.kind.from_toml, given)
    if unknown:
        raise SettingsError(f"{path}: unknown setting{'s' * (len(unknown) > 1)}: "
                            + ", ".join(unknown))
    return found


# --- the effective settings --------------------------------------------------------------


@attrs.frozen
class Settings:
    """What flags, environment and file gave ``eventbus serve``, by precedence."""

    #: The ``[serve]`` settings, in effect.
    options: ServeOptions
    #: Every ``[serve]`` setting's value and source.
    serve: Mapping[str, Given]
    #: The ``[bus]`` settings that were given (not those left to the app).
    bus: Mapping[str, Given]
    #: The config file read, if any.
    config_file: str | None

    def bus_config(self, base: ServerConfig, *, from_app: bool = True) -> tuple[
            ServerConfig, dict[str, Given]]:
        """``base`` (the app's settings) with the given ``[bus]`` settings in place of
        its own; and every field's value and source.

        Raises:
            SettingsError: a value the ServerConfig refuses (``ping_interval`` not
                positive, say), named with where it came from.
        """
        config = base
        for name, given in self.bus.items():
            try:
                config = attrs.evolve(config, **{name: given.value})
            except ValueError as exc:
                raise SettingsError(f"{given.describe()}: {exc}") from None
        sources = {}
        for setting in BUS:
            value = getattr(config, setting.name)
            if setting.name in self.bus:
                sources[setting.name] = self.bus[setting.name]
            elif from_app and value != setting.default:
                sources[setting.name] = Given(value, "app")
            else:
                sources[setting.name] = Given(value, "default")
        return config, sources

    def render(self, bus: Mapping[str, Given]) -> str:
        """The effective settings as a config file, each value's source in a comment:
        what ``--print-config`` prints (read back by ``--config``, it gives the
        same settings)."""
        lines = [
            "# The settings of eventbus serve, each with its source (flag > env > file >",
            "# app > default). Saved as a file, they apply with: eventbus serve --config FILE",
        ]
        if self.config_file is not None:
            lines.append(f"# Config file read: {self.config_file}")
        for table, settings, values in (("serve", SERVE, self.serve), ("bus", BUS, bus)):
            rows = [(_row(s, values[s.name]), _comment(s, values[s.name])) for s in settings]
            width = max(len(row) for row, _ in rows)
            lines += ["", f"[{table}]"]
            lines += [f"{row:<{width}}  # {comment}" for row, comment in rows]
        return "\n".join(lines) + "\n"


#: Settings whose values are never printed.
SECRET_SETTINGS = frozenset({"secret"})


def _row(setting: Setting, given: Given) -> str:
    if setting.name in SECRET_SETTINGS and given.value is not None:
        # Commented out: a file read back must not carry a secret that was never in it.
        return f"# {setting.name} = (hidden)"
    return f"{setting.name} = {setting.kind.to_toml(given.value)}"


def _comment(setting: Setting, given: Given) -> str:
    if given.source == "default" and setting.default_text is not None:
        return f"default ({setting.default_text})"
    return given.comment()


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Read the flags in ``args``, the ``EVENTBUS_*`` variables of ``environ`` and the
    config file; resolve each ``[serve]`` setting by precedence.

    Raises:
        SettingsError: an unknown setting in the file, an unknown ``EVENTBUS_*``
            variable that looks like a setting, a value of the wrong type or that
            its setting refuses, or a config file that cannot be read or parsed.
    """
    flags = _from_flags(args)
    env = _from_environ(environ)
    path = args.config if args.config is not None else environ.get(CONFIG_ENV) or None
    given = {**(_from_file(path) if path is not None else {}), **env, **flags}
    options = ServeOptions()
    serve = {}
    for setting in SERVE:
        found = given.get(setting.name, Given(setting.default, "default"))
        try:
            options = attrs.evolve(options, **{setting.name: found.value})
        except ValueError as exc:
            raise SettingsError(f"{found.describe()}: {exc}") from None
        serve[setting.name] = found
    bus = {s.name: given[s.name] for s in BUS if s.name in given}
    settings = Settings(options, serve, bus, path)
    # ServerConfig's checks are of one field each: a bad value is said now, before
    # the app loads (and logs), whatever the app's own settings.
    settings.bus_config(ServerConfig(), from_app=False)
    return settings
