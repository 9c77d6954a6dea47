"""The settings: those of ``eventbus serve`` itself (:class:`ServeOptions`) and
the fields of :class:`~eventbus.ServerConfig`, each with its flag, environment
variable and TOML key, generated from ``attrs.fields`` and the ``#:`` comments."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import textwrap
import typing
from typing import Any, Literal

import attrs

from ..server import ServerConfig
from .kinds import Kind, kind_of

__all__ = ["ALL", "BUS", "BY_ENV", "BY_NAME", "CONFIG_ENV", "PREFIX", "SERVE", "ServeOptions",
           "Setting", "add_arguments"]

#: The environment variable naming the config file, when ``--config`` does not.
CONFIG_ENV = "EVENTBUS_CONFIG"
#: What every setting's environment variable starts with.
PREFIX = "EVENTBUS_"

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
        return PREFIX + self.name.upper()


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


def settings_of(cls: type, table: str) -> tuple[Setting, ...]:
    """A setting for each field of the attrs class ``cls``, in the order of its fields.

    Raises:
        TypeError: a field's type is none that flags, variables and TOML can spell.
    """
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    found = []
    for field in attrs.fields(cls):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        found.append(Setting(
            name=field.name, table=table,
            kind=kind_of(hints[field.name], f"{cls.__name__}.{field.name}"),
            default=default, doc=docs.get(field.name, f"{cls.__name__}.{field.name}"),
            metavar=field.metadata.get(_METAVAR),
            default_text=field.metadata.get(_DEFAULT_TEXT),
            positional=field.metadata.get(_POSITIONAL, False),
        ))
    return tuple(found)


#: The ``[serve]`` settings, from :class:`ServeOptions`.
SERVE = settings_of(ServeOptions, "serve")
#: The ``[bus]`` settings, from :class:`~eventbus.ServerConfig`.
BUS = settings_of(ServerConfig, "bus")
ALL = SERVE + BUS
BY_NAME = {setting.name: setting for setting in ALL}
BY_ENV = {setting.env: setting for setting in ALL}
# Names the parser of `eventbus serve` uses for itself: a setting may not take them.
_RESERVED = frozenset({"command", "run", "config", "print_config", "reuse_port", "argv"})
if len(BY_NAME) < len(ALL) or _RESERVED & BY_NAME.keys():
    # Flat names (flags, variables) would collide: ServerConfig must not take a
    # name of the command's own (port, host, ...).
    raise TypeError("ServerConfig and ServeOptions have a setting name in common, or one "
                    f"that eventbus serve reserves: {sorted(_RESERVED & BY_NAME.keys())}")


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
