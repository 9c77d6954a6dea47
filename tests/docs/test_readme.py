"""The README's code runs: its server snippet serves, its client snippet talks to it."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import types
from pathlib import Path
from typing import Any

import trio

import eventbus

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


async def test_readme_snippets_run_against_each_other() -> None:
    server_code, client_code = python_blocks()[:2]
    namespace: dict[str, Any] = {}
    exec(compile(server_code, "README server", "exec"), namespace)
    bus = namespace["bus"]
    assert isinstance(bus, eventbus.EventBus)
    output = io.StringIO()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            code = compile(
                client_code.replace("127.0.0.1:8765", f"127.0.0.1:{port}"), "README client",
                "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            client_scope = trio.CancelScope()

            async def run_client() -> None:
                with client_scope, contextlib.redirect_stdout(output):
                    result = eval(code, {"eventbus": eventbus})
                    assert isinstance(result, types.CoroutineType)
                    await result

            nursery.start_soon(run_client)
            while not bus.members("news"):  # noqa: ASYNC110 - the client is subscribing
                await trio.sleep(0.01)
            bus.emit("headline", "it works", to="news")
            while "it works" not in output.getvalue():  # noqa: ASYNC110
                await trio.sleep(0.01)
            client_scope.cancel()
            nursery.cancel_scope.cancel()
    assert output.getvalue().splitlines() == [
        "{'hello': 'world'}", "news headline it works",
    ]
