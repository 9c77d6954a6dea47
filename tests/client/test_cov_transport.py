"""The client's transport seam: URLs are checked before any I/O, and every foreign
exception of trio, trio-websocket and the network leaves as an eventbus exception
(``raise ... from`` the original), or passes through untouched when it is not ours
to convert.

Mostly without I/O; the one connection test uses a listener on 127.0.0.1, port 0,
that accepts and never answers, under ``trio.fail_after``.
"""

from __future__ import annotations

import errno
import ssl
from functools import partial

import pytest
import trio
import trio_websocket

import eventbus
from eventbus import ConnectionClosed, HandshakeRejected
from eventbus.client.transport import check_url, map_exceptions, url_opener

TARGET = "ws://example.test/"


def converted(exc: BaseException) -> BaseException:
    """What leaves ``map_exceptions`` when ``exc`` is raised inside it."""
    try:
        with map_exceptions(TARGET):
            raise exc
    except BaseException as caught:  # whatever it is, the test looks at it
        return caught
    raise AssertionError("map_exceptions swallowed the exception")


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="names no host"):
        check_url("ws:///path")


def test_an_ssl_context_needs_a_wss_url() -> None:
    with pytest.raises(ValueError, match="needs a wss:// URL"):
        url_opener(
            "ws://127.0.0.1:1/", subprotocols=["eventbus.v1.json"], headers=[],
            ssl_context=ssl.create_default_context(), connect_timeout=1, close_timeout=1,
            max_message_size=1024,
        )


def test_a_close_without_a_reason_has_no_close_code() -> None:
    error = converted(trio_websocket.ConnectionClosed(None))
    assert isinstance(error, ConnectionClosed)
    assert error.close_code is None


def test_a_close_with_a_reason_keeps_its_code_and_text() -> None:
    error = converted(trio_websocket.ConnectionClosed(
        trio_websocket.CloseReason(4001, "ping timeout")))
    assert isinstance(error, ConnectionClosed)
    assert (error.close_code, error.reason) == (4001, "ping timeout")


def test_a_rejected_handshake_keeps_its_status_and_body() -> None:
    error = converted(trio_websocket.ConnectionRejected(403, (), b" go away \n"))
    assert isinstance(error, HandshakeRejected)
    assert (error.status, error.message) == (403, "go away")


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (trio_websocket.ConnectionTimeout(), f"timed out connecting to {TARGET}"),
        (trio_websocket.DisconnectionTimeout(), f"timed out closing the connection to {TARGET}"),
        (trio_websocket.HandshakeError("bad upgrade"), f"the handshake with {TARGET} failed"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
         f"connection to {TARGET} lost: Connection reset by peer"),
        (trio.BrokenResourceError(), f"connection to {TARGET} lost"),
        (trio.ClosedResourceError(), f"connection to {TARGET} lost"),
    ],
)
def test_network_failures_become_connection_closed(exc: Exception, says: str) -> None:
    error = converted(exc)
    assert isinstance(error, ConnectionClosed)
    assert says in str(error)
    assert error.__cause__ is exc


def test_a_handshake_error_caused_by_the_network_names_the_network_error() -> None:
    handshake = trio_websocket.HandshakeError()
    handshake.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    error = converted(handshake)
    assert isinstance(error, ConnectionClosed)
    assert str(error).startswith(f"cannot connect to {TARGET}: Connection refused")


def test_an_os_error_lists_the_distinct_reasons_of_its_attempts() -> None:
    # trio.open_tcp_stream keeps the reason of each address it tried in the cause.
    failed = OSError("all attempts to connect to example.test:80 failed")
    failed.__cause__ = ExceptionGroup("attempts", [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        ValueError("not an OSError"),
    ])
    error = converted(failed)
    assert str(error).endswith(
        "failed (Connection refused, Network is unreachable)"), str(error)


def test_an_os_error_whose_attempts_give_no_reason_is_named_alone() -> None:
    failed = OSError("all attempts failed")
    failed.__cause__ = ExceptionGroup("attempts", [OSError("no errno")])
    assert str(converted(failed)) == f"connection to {TARGET} lost: all attempts failed"


def test_a_group_of_one_network_failure_is_converted() -> None:
    inner = trio.BrokenResourceError()
    error = converted(ExceptionGroup("nursery", [inner]))
    assert isinstance(error, ConnectionClosed)
    assert error.__cause__ is inner


def test_a_group_of_one_foreign_exception_passes_through_unchanged() -> None:
    group = ExceptionGroup("nursery", [KeyError("mine")])
    assert converted(group) is group


def test_other_exceptions_pass_through_unchanged() -> None:
    mine = KeyError("mine")
    assert converted(mine) is mine
    ours = ConnectionClosed("already ours")
    assert converted(ours) is ours


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            with pytest.raises(ConnectionClosed, match="timed out connecting"):
                async with eventbus.connect(f"ws://127.0.0.1:{port}/", connect_timeout=0.2,
                                            reconnect=False):
                    pytest.fail("the handshake succeeded")
            nursery.cancel_scope.cancel()
