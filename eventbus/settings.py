"""Where ``eventbus serve`` gets its settings: flags, the environment, a TOML file.

There are two kinds of settings. Those of the command itself (:class:`ServeOptions`:
the app, the address, TLS, logging, Redis, workers) form the ``[serve]`` table of
the config file; the fields of :class:`~eventbus.ServerConfig` form the ``[bus]``
table. Each setting has one name, and its flag and environment variable follow from
it: ``ping_interval`` is ``--ping-interval``, ``EVENTBUS_PING_INTERVAL`` and
``[bus] ping_interval``. Both tables are read from ``attrs.fields`` of their class,
types and ``#:`` comments included, so that a field added to ``ServerConfig`` is a
setting of the command by itself, with its help text.

Precedence, highest first: a flag, an environment variable, the config file
(``--config PATH``, else ``EVENTBUS_CONFIG``), the app's own ``ServerConfig`` (for
``[bus]`` settings), the default.

Values: a list (``allowed_origins``) is comma-separated in a flag or variable and an
array in TOML; a setting that may be ``None`` takes the word ``none`` (the string
``"none"`` in TOML, which has no null); a boolean is ``true``/``false`` (or ``1``/``0``,
``yes``/``no``, ``on``/``off`` in a variable, and ``--open-rooms``/``--no-open-rooms``
as flags).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import math
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from .server import ServerConfig

__all__ = [
    "BUS",
    "CONFIG_ENV",
    "SERVE",
    "Given",
    "Kind",
    "ServeOptions",
    "Setting",
    "Settings",
    "SettingsError",
    "add_arguments",
    "load",
]

#: The environment variable naming the config file, when ``--config`` does not.
CONFIG_ENV = "EVENTBUS_CONFIG"
_PREFIX = "EVENTBUS_"

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

# attrs metadata keys of ServeOptions' fields: how a setting shows in --help.
_METAVAR = "eventbus.metavar"
_DEFAULT_TEXT = "eventbus.default_text"
_POSITIONAL = "eventbus.positional"


def _port(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be 0 to 65535, not {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class ServeOptions:
    """The settings of ``eventbus serve`` itself: the ``[serve]`` table."""

    #: The app to serve, as module:attribute (an EventBus, or a function returning one).
    app: str | None = attrs.field(default=None, metadata={
        _POSITIONAL: True, _DEFAULT_TEXT: "the built-in demo"})
    #: Address to listen on.
    host: str = attrs.field(default="127.0.0.1", metadata={_METAVAR: "HOST"})
    #: Port to listen on, 0 for a free one.
    port: int = attrs.field(default=8765, validator=_port, metadata={_METAVAR: "PORT"})
    #: TLS certificate (PEM) to serve wss://.
    certfile: str | None = attrs.field(default=None, metadata={
        _METAVAR: "CERTFILE", _DEFAULT_TEXT: "none, plain ws://"})
    #: TLS private key (PEM).
    keyfile: str | None = attrs.field(default=None, metadata={
        _METAVAR: "KEYFILE", _DEFAULT_TEXT: "in the certfile"})
    #: Least severe messages logged.
    log_level: LogLevel = "info"
    #: Log lines as text, or as one JSON object per line (for log collectors).
    log_format: LogFormat = "text"
    #: Join the other nodes of the bus through this Redis server, such as
    #: redis://127.0.0.1:6379/0.
    redis: str | None = attrs.field(default=None, metadata={
        _METAVAR: "URL", _DEFAULT_TEXT: "none, one node alone"})
    #: Prefix of the Redis keys and channels, so that several buses can share one Redis.
    redis_prefix: str = attrs.field(default="eventbus", metadata={_METAVAR: "PREFIX"})
    #: Run N processes on the same port, joined through Redis, to use N cores.
    workers: int = attrs.field(default=1, validator=_at_least_one, metadata={_METAVAR: "N"})


class SettingsError(Exception):
    """A setting is unknown or its value is bad; the message says which, where it
    came from and why, in one line."""


# --- kinds of values: how each type is read and written -------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@attrs.frozen
class Kind:
    """The type of a setting, as flags, variables and TOML spell it."""

    #: ``bool``, ``int``, ``float``, ``str``, ``choice`` or ``strings`` (a list of str).
    name: str
    #: Whether ``None`` is a value (spelt ``none``).
    optional: bool = False
    #: The values of a ``choice``.
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        """The value of a flag or environment variable.

        Raises:
            ValueError: ``text`` is not a value of this kind; the message, to follow
                the setting's name, says why (``must be an integer, not 'x'``).
        """
        if self.optional and text.strip().lower() == "none":
            return None
        if self.name == "bool":
            word = text.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError(f"must be true or false, not {text!r}")
        if self.name == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"must be an integer{self._or_none}, not {text!r}") from None
        if self.name == "float":
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"must be a number{self._or_none}, not {text!r}") from None
            return self._finite(number)
        if self.name == "strings":
            return tuple(item.strip() for item in text.split(",") if item.strip())
        return self._string(text)

    def from_toml(self, value: Any) -> Any:
        """The value of a TOML key.

        Raises:
            ValueError: ``value`` is not of this kind (as for :meth:`parse`).
        """
        if self.optional and value == "none":
            return None
        if self.name == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError(f"must be true or false, not {value!r}")
        # TOML has no bool-int confusion, but Python does: True is an int.
        if self.name == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.name == "int":
            raise ValueError(f"must be an integer{self._or_none}, not {value!r}")
        if self.name == "float":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return self._finite(float(value))
            raise ValueError(f"must be a number{self._or_none}, not {value!r}")
        if self.name == "strings":
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return tuple(value)
            raise ValueError(f"must be an array of strings{self._or_none}, not {value!r}")
        if isinstance(value, str):
            return self._string(value)
        raise ValueError(f"must be a string{self._or_none}, not {value!r}")

    def to_toml(self, value: Any) -> str:
        """``value`` as TOML (what :meth:`from_toml` reads back)."""
        if value is None:
            return '"none"'
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return _toml_string(value)
        return "[" + ", ".join(_toml_string(item) for item in value) + "]"

    def show(self, value: Any) -> str:
        """``value`` as a flag would give it (for ``--help``)."""
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.name == "strings":
            return ",".join(value) or "''"
        return str(value)

    @property
    def _or_none(self) -> str:
        return " or none" if self.optional else ""

    def _finite(self, number: float) -> float:
        # nan would pass every "must be positive" check (all comparisons are false).
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, not {number!r}")
        return number

    def _string(self, text: str) -> str:
        if not self.choices:
            return text
        # Level names are upper case in logging: EVENTBUS_LOG_LEVEL=DEBUG is meant.
        if text.lower() in self.choices:
            return text.lower()
        raise ValueError(f"must be one of {', '.join(self.choices)}, not {text!r}")


def _toml_string(text: str) -> str:
    """A TOML basic string; control characters (which TOML forbids raw) escaped."""
    escaped = "".join(
        "\\" + char if char in '"\\'
        else f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in text
    )
    return f'"{escaped}"'


def _kind(hint: Any, where: str) -> Kind:
    """The kind of a field's type hint; a type no source can spell is an error here,
    so that a field added with one fails the tests rather than being left out."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return attrs.evolve(_kind(rest[0], where), optional=True)
    if hint in (bool, int, float, str):
        return Kind(hint.__name__)
    if origin is Literal and all(isinstance(arg, str) for arg in args):
        return Kind("choice", choices=args)
    if origin in (Sequence, tuple, list) and args in ((str,), (str, ...)):
        return Kind("strings")
    raise TypeError(f"{where} has the type {hint!r}, which eventbus serve cannot read "
                    "from flags, the environment or a config file")


# --- the settings ------------------------------------------------------------------------


@attrs.frozen
class Setting:
    """One setting, with the names it has in each source."""

    #: Its name: the field's, and its key in the config file.
    name: str
    #: Its table in the config file: ``serve`` or ``bus``.
    table: str
    kind: Kind
    default: Any
    #: Its ``#:`` comment, as plain text.
    doc: str
    metavar: str | None = None
    #: The default as ``--help`` says it, when not the value itself.
    default_text: str | None = None
    #: Whether its flag is the positional argument (``app``).
    positional: bool = False

    @property
    def flag(self) -> str:
        """``--ping-interval``; ``APP`` for the positional argument."""
        return self.name.upper() if self.positional else "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """``EVENTBUS_PING_INTERVAL``."""
        return _PREFIX + self.name.upper()


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comment above each attribute of ``cls`` (Sphinx's convention, as
    the reference docs read them), joined into one line of plain text."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen application): no help text
        return {}
    lines = source.splitlines()
    docs = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            for line in reversed(lines[:node.lineno - 1]):
                if not line.strip().startswith("#:"):
                    break
                comment.insert(0, line.strip()[2:].strip())
            if not comment:
                continue
            text = " ".join(comment).replace("``", "")
            docs[node.target.id] = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text)
    return docs


def _settings(cls: type, table: str) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    found = []
    for field in attrs.fields(cls):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        found.append(Setting(
            name=field.name, table=table,
            kind=_kind(hints[field.name], f"{cls.__name__}.{field.name}"),
            default=default, doc=docs.get(field.name, f"{cls.__name__}.{field.name}"),
            metavar=field.metadata.get(_METAVAR),
            default_text=field.metadata.get(_DEFAULT_TEXT),
            positional=field.metadata.get(_POSITIONAL, False),
        ))
    return tuple(found)


#: The ``[serve]`` settings, from :class:`ServeOptions`.
SERVE = _settings(ServeOptions, "serve")
#: The ``[bus]`` settings, from :class:`~eventbus.ServerConfig`.
BUS = _settings(ServerConfig, "bus")
_ALL = SERVE + BUS
_BY_NAME = {setting.name: setting for setting in _ALL}
_BY_ENV = {setting.env: setting for setting in _ALL}
# Names the parser of `eventbus serve` uses for itself: a setting may not take them.
_RESERVED = frozenset({"command", "run", "config", "print_config", "reuse_port", "argv"})
if len(_BY_NAME) < len(_ALL) or _RESERVED & _BY_NAME.keys():
    # Flat names (flags, variables) would collide: ServerConfig must not take a
    # name of the command's own (port, host, ...).
    raise TypeError("ServerConfig and ServeOptions have a setting name in common, or one "
                    f"that eventbus serve reserves: {sorted(_RESERVED & _BY_NAME.keys())}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every setting, and ``--config``, to ``eventbus serve``'s parser.

    Flags default to ``None`` (not given), so that a lower source can apply; their
    help says the real default.
    """
    for setting in SERVE:
        _add_flag(parser, setting)
    parser.add_argument("--config", metavar="PATH",
                        help=f"read settings from this TOML file (default: ${CONFIG_ENV}, "
                        "else none)")
    group = parser.add_argument_group(
        "bus settings",
        "The fields of ServerConfig (see its reference for what each means). Each "
        "replaces the app's own setting; the defaults shown are ServerConfig's. A list "
        "is comma-separated; 'none' unsets a setting that may be None.",
    )
    for setting in BUS:
        _add_flag(group, setting)


def _add_flag(parser: argparse._ActionsContainer, setting: Setting) -> None:
    shown = setting.default_text or setting.kind.show(setting.default)
    doc = setting.doc[:1].lower() + setting.doc[1:] if setting.doc[1:2].islower() \
        else setting.doc
    help_text = f"{doc.rstrip('.')} (default: {shown})".replace("%", "%%")
    if setting.positional:
        parser.add_argument(setting.name, nargs="?", metavar=setting.flag, help=help_text)
    elif setting.kind.name == "bool":
        parser.add_argument(setting.flag, dest=setting.name, default=None, help=help_text,
                            action=argparse.BooleanOptionalAction)
    else:
        metavar = setting.metavar or {
            "int": "N", "float": "NUMBER", "strings": "A,B,...",
            "choice": "{" + ",".join(setting.kind.choices) + "}",
        }.get(setting.kind.name, setting.name.upper())
        parser.add_argument(setting.flag, dest=setting.name, default=None, metavar=metavar,
                            help=help_text)


# --- reading the sources -----------------------------------------------------------------

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
    for setting in _ALL:
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
        setting = _BY_ENV.get(name)
        if setting is not None:
            found[setting.name] = _parsed(setting, setting.kind.parse, Given(text, "env", name))
        elif name != CONFIG_ENV and name.upper().startswith(_PREFIX):
            near = _near(name.upper()[len(_PREFIX):], [s.name.upper() for s in _ALL]
                         + [CONFIG_ENV[len(_PREFIX):]])
            if near is not None:
                unknown.append(f"{name} (did you mean {_PREFIX}{near}?)")
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
            setting = _BY_NAME.get(table)
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
                other = _BY_NAME.get(key.replace("-", "_"))
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
            rows = [(f"{s.name} = {s.kind.to_toml(values[s.name].value)}",
                     _comment(s, values[s.name])) for s in settings]
            width = max(len(row) for row, _ in rows)
            lines += ["", f"[{table}]"]
            lines += [f"{row:<{width}}  # {comment}" for row, comment in rows]
        return "\n".join(lines) + "\n"


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
