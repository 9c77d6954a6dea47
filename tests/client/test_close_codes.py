"""What the client does after each close code (PROTOCOL.md section 14), against a
real server on 127.0.0.1 whose ``close_with`` handler closes the connection with the
code it is sent; 1006 (no close frame) comes from stopping the server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

import eventbus
from eventbus import Backoff, CloseCode, Connection
from eventbus.client.session import NO_RECONNECT_CLOSE_CODES

from .conftest import Bus, make_bus, serving

FAST = Backoff(initial=0.01, cap=0.05)
ROOT = Path(__file__).resolve().parents[2]
CLIENT_REFERENCE = ROOT / "docs" / "reference" / "client.md"
BROWSER_CLIENT = ROOT / "eventbus" / "static" / "eventbus.js"

#: The codes after which the client must not reconnect: the server's application
#: closed on purpose (1000), this client broke the protocol and would break it again
#: (1002, 1007, 1009, 4000), it needs new credentials (4003), or its session lives on
#: in another connection (4004).
STOPS = [1000, 1002, 1007, 1009, 4000, 4003, 4004]
#: The codes after which it reconnects with backoff (1006: no close frame at all).
RECONNECTS = [1001, 1006, 1011, 4001, 4002]


def closing_bus(handshakes: list[str] | None = None) -> Bus:
    """A bus whose ``close_with`` handler closes with the code it is sent; each
    handshake's path goes into ``handshakes``."""
    bus = make_bus()

    @bus.on("close_with")
    async def close_with(sock: Connection, code: int) -> None:
        sock.close(code, "closed by the test")

    @bus.authenticate
    async def count(request: eventbus.HandshakeRequest) -> None:
        if handshakes is not None:
            handshakes.append(request.path)

    return bus


def test_the_codes_that_stop_the_client_are_those_of_the_decision() -> None:
    assert sorted(NO_RECONNECT_CLOSE_CODES) == STOPS
    assert set(STOPS).isdisjoint(RECONNECTS)
    assert set(STOPS) | set(RECONNECTS) == set(CloseCode) | {1006}


def test_the_browser_client_stops_after_the_same_codes() -> None:
    # tests/browser runs it after each code; this holds where Chromium is missing.
    found = re.search(r"^const FINAL_CLOSE_CODES = new Set\(\[([\d, ]+)\]\);$",
                      BROWSER_CLIENT.read_text(), re.MULTILINE)
    assert found is not None
    assert sorted(int(code) for code in found[1].split(",")) == STOPS


def test_the_client_reference_lists_the_same_codes() -> None:
    rows = re.findall(r"^\| `(\d{4})` \|.*\| (Stops|Reconnects)[^|]*\|$",
                      CLIENT_REFERENCE.read_text(), re.MULTILINE)
    stated = {int(code): action for code, action in rows}
    assert stated == {**dict.fromkeys(STOPS, "Stops"), **dict.fromkeys(RECONNECTS, "Reconnects")}


@pytest.mark.parametrize("code", STOPS)
async def test_the_client_stops_and_raises_the_close(code: int) -> None:
    handshakes: list[str] = []
    with trio.fail_after(10):
        async with serving(closing_bus(handshakes)) as server, \
                eventbus.connect(server.url, reconnect=FAST) as client:
            lost: list[eventbus.ConnectionClosed] = []
            client.on_disconnect(lost.append)
            async with client.subscribe("news") as events:
                await client.emit("close_with", code)
                with pytest.raises(eventbus.ConnectionClosed) as ended:
                    await events.__anext__()
            assert (ended.value.close_code, ended.value.reason) == (code, "closed by the test")
            assert client.closed
            assert [error.close_code for error in lost] == [code]
            with pytest.raises(eventbus.ConnectionClosed) as raised:
                await client.call("echo", 1)
            assert raised.value.close_code == code
            assert f"close code {code}" in str(raised.value)
            # Closed for good: the task that would reconnect has ended without trying.
            assert handshakes == ["/"]


@pytest.mark.parametrize("code", RECONNECTS)
async def test_the_client_reconnects_and_rejoins(code: int) -> None:
    with trio.fail_after(10):
        async with serving(closing_bus()) as server, \
                eventbus.connect(server.url, reconnect=FAST) as client:
            lost: list[eventbus.ConnectionClosed] = []
            client.on_disconnect(lost.append)
            reconnected = trio.Event()
            client.on_reconnect(reconnected.set)
            first_sid = client.sid
            async with client.subscribe("news") as events:
                if code == 1006:
                    await server.stop()
                    await server.start(closing_bus())
                else:
                    await client.emit("close_with", code)
                await reconnected.wait()
                assert [error.close_code for error in lost] == [code]
                assert not client.closed
                assert client.sid != first_sid
                assert await client.call("echo", "back") == "back"
                async with eventbus.connect(server.url) as publisher:
                    await publisher.publish("news", "after", code)
                event: Any = await events.__anext__()
                assert event.data == code
