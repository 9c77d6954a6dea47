"""How each type of setting is spelt: in a flag or an environment variable, and in
TOML (read and written back by ``--print-config``)."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import attrs

__all__ = ["Kind", "kind_of", "toml_string"]

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
            return toml_string(value)
        return "[" + ", ".join(toml_string(item) for item in value) + "]"

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


def toml_string(text: str) -> str:
    """A TOML basic string; control characters (which TOML forbids raw) escaped."""
    escaped = "".join(
        "\\" + char if char in '"\\'
        else f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in text
    )
    return f'"{escaped}"'


def kind_of(hint: Any, where: str) -> Kind:
    """The kind of a field's type hint; a type no source can spell is an error here,
    so that a field added with one fails the tests rather than being left out."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return attrs.evolve(kind_of(rest[0], where), optional=True)
    if hint in (bool, int, float, str):
        return Kind(hint.__name__)
    if origin is Literal and all(isinstance(arg, str) for arg in args):
        return Kind("choice", choices=args)
    if origin in (Sequence, tuple, list) and args in ((str,), (str, ...)):
        return Kind("strings")
    raise TypeError(f"{where} has the type {hint!r}, which eventbus serve cannot read "
                    "from flags, the environment or a config file")
