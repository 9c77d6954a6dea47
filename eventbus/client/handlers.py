"""Event handlers and hooks of a client: how they are called and answered.

A handler is ``handler(data)`` or ``handler(data, incoming)``, sync or async. Which
of the two is decided once, from its signature, when it is registered: if it
accepts a second positional argument it gets the :class:`~.messages.Incoming`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from ..errors import RequestError
from ..protocol import Ack, ErrorReply
from .messages import Incoming

__all__ = ["Handler", "answer", "call_hook"]

logger = logging.getLogger("eventbus.client")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Handler:
    """A registered ``on`` handler."""

    __slots__ = ("func", "wants_incoming")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.wants_incoming = _accepts_two(func)

    async def run(self, incoming: Incoming) -> Any:
        """Call the handler; await its result if it is awaitable."""
        if self.wants_incoming:
            result = self.func(incoming.data, incoming)
        else:
            result = self.func(incoming.data)
        if inspect.isawaitable(result):
            result = await result
        return result


def _accepts_two(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them data
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in _POSITIONAL:
            positional += 1
    return positional >= 2


async def answer(handler: Handler | None, incoming: Incoming, ack_id: int) -> Ack | ErrorReply:
    """Run the handler of a server call and build the answer packet.

    No handler: ``unknown_event``. A :class:`~eventbus.RequestError` from the
    handler: its code and message. Any other exception: ``internal_error``, with
    the traceback logged here and never sent.
    """
    if handler is None:
        return ErrorReply(ack_id, "unknown_event", f"no handler for event {incoming.event!r}")
    try:
        value = await handler.run(incoming)
    except RequestError as exc:
        return ErrorReply(ack_id, exc.code, exc.message[:1024])
    except Exception:
        logger.exception("handler for server call %r failed", incoming.event)
        return ErrorReply(ack_id, "internal_error", "internal error")
    return Ack(ack_id, value)


async def call_hook(hook: Callable[..., Any] | None, *args: Any) -> bool:
    """Call a hook (sync or async) if there is one; returns whether there was.

    A failing hook is logged with its traceback and does not stop the client.
    """
    if hook is None:
        return False
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("client hook %s failed", getattr(hook, "__name__", hook))
    return True
