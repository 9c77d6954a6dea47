"""Event handlers: how a function becomes one, and how its payload is checked.

A handler whose second parameter is annotated with an attrs class receives the
event's data structured into that class (by cattrs); data of the wrong shape is
answered with ``invalid_payload`` naming the field. A handler that returns an
attrs instance has it unstructured back into plain data for the ack.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs

from ..errors import InvalidPayload

__all__ = ["Handler", "make_handler", "maybe_await"]

_converter = cattrs.Converter()


@attrs.frozen
class Handler:
    """A registered event handler.

    Attributes:
        func: ``async def func(sock, data)``, or a plain ``def``.
        payload_type: The attrs class the data is structured into, if any.
        concurrency: How many runs of this handler one connection may have at once;
            1 (the default) runs them one after another, in order.
    """

    func: Callable[..., Any]
    payload_type: type | None = None
    concurrency: int = 1

    def structure(self, event: str, data: Any) -> Any:
        """The handler's argument for ``data``.

        Raises:
            InvalidPayload: the data does not fit the declared class.
        """
        if self.payload_type is None:
            return data
        try:
            return _converter.structure(data, self.payload_type)
        except Exception as exc:  # any failure here is the client's bad data
            # cattrs words its validation errors for people (field paths, expected
            # types); anything else is Python's wording about the value: not sent.
            details = "; ".join(cattrs.transform_error(exc)) if isinstance(
                exc, cattrs.BaseValidationError) else (
                f"the data does not fit {self.payload_type.__name__}")
            raise InvalidPayload(f"invalid payload for {event!r}: {details}") from None

    @staticmethod
    def unstructure(result: Any) -> Any:
        """Plain data for an answer: attrs instances become maps."""
        if attrs.has(type(result)):
            return _converter.unstructure(result)
        return result


def make_handler(func: Callable[..., Any], concurrency: int = 1) -> Handler:
    """Check that ``func`` can be a handler and read its payload annotation.

    Raises:
        TypeError: ``func`` is not callable.
        ValueError: ``concurrency`` is below 1.
    """
    if not callable(func):
        raise TypeError(f"handler {func!r} must be a function")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return Handler(func, _payload_type(func), concurrency)


def _payload_type(func: Callable[..., Any]) -> type | None:
    params = list(inspect.signature(func).parameters.values())
    if len(params) < 2:
        return None
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: treat the payload as plain data
        return None
    hint = hints.get(params[1].name)
    return hint if isinstance(hint, type) and attrs.has(hint) else None


async def maybe_await(result: Any) -> Any:
    """The result of an app function that may be plain or a coroutine function."""
    if inspect.isawaitable(result):
        return await result
    return result
