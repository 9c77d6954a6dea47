"""How the client calls what the application registered: a handler gets the
``Incoming`` too when it takes two positional arguments (or ``*args``), a builtin
without a signature gets the data alone, and a failing hook is logged, not raised.

No I/O: handlers and hooks are called directly.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from eventbus import Incoming
from eventbus.client.handlers import Handler, call_hook

EVENT = Incoming("news", "headline", [3, 1, 2], "e1", 7)


async def test_a_builtin_without_a_signature_gets_the_data_alone() -> None:
    handler = Handler(max)
    assert not handler.wants_incoming
    assert await handler.run(EVENT) == 3


async def test_a_handler_taking_star_args_gets_the_incoming_too() -> None:
    def spy(*args: Any) -> tuple[Any, ...]:
        return args

    assert await Handler(spy).run(EVENT) == (EVENT.data, EVENT)


async def test_keyword_only_parameters_do_not_count() -> None:
    async def handler(data: Any, *, incoming: Incoming | None = None) -> Any:
        return data, incoming

    assert await Handler(handler).run(EVENT) == (EVENT.data, None)


async def test_a_failing_hook_is_logged_and_counts_as_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_gap(room: str | None, count: int) -> None:
        raise RuntimeError("hook bug")

    caplog.set_level(logging.ERROR, "eventbus.client")
    assert await call_hook(on_gap, "news", 3) is True
    [record] = caplog.records
    assert record.getMessage() == "client hook on_gap failed"
    assert record.exc_info is not None
    assert await call_hook(None, "news", 3) is False
