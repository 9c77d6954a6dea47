"""The client's boundary with trio-websocket: opening connections, mapping errors.

Everything trio-websocket (and the network under it) can raise is converted here,
by :func:`map_exceptions`, into the eventbus exception tree, with the original
kept as ``__cause__``. The rest of the client never sees a foreign exception.

An *opener* is a function that returns an async context manager yielding an open
:class:`trio_websocket.WebSocketConnection`; :func:`url_opener` makes one for a
``ws://`` or ``wss://`` URL, and :mod:`eventbus.testing` one for an in-process bus.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TypeAlias, cast
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket
import wsproto.utilities

from ..errors import ConnectionClosed, EventBusError, HandshakeRejected

__all__ = [
    "CANCELLED_CLOSE_WAIT",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_QUEUE_SIZE",
    "Headers",
    "Opener",
    "check_url",
    "collapse_groups",
    "encode_headers",
    "map_exceptions",
    "open_websocket_over",
    "url_opener",
]

#: Messages trio-websocket may hold between its reader and ours. Small: the
#: client's own reader never blocks for long, and the server keeps the real queue.
MESSAGE_QUEUE_SIZE = 32
#: Largest message accepted from the server, unless told otherwise.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

Opener: TypeAlias = Callable[[], AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]
Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]


def encode_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    """Extra handshake headers in trio-websocket's form (UTF-8 bytes pairs)."""
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(name.encode(), value.encode()) for name, value in pairs]


def check_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is a ``ws://`` or ``wss://`` URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"a WebSocket URL starts with ws:// or wss://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} names no host")
    parts.port  # noqa: B018  (raises ValueError for a port out of range)


def url_opener(
    url: str, *, subprotocols: Sequence[str], headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None, connect_timeout: float, close_timeout: float,
    max_message_size: int,
) -> Opener:
    """An opener that connects to ``url`` each time it is called."""
    check_url(url)
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if ssl_context is not None and not secure:
        raise ValueError("ssl_context needs a wss:// URL")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    host_header = parts.netloc.rpartition("@")[2]
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def open_stream() -> trio.abc.Stream:
        if not secure:
            return await trio.open_tcp_stream(host, port)
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context,
                                                   https_compatible=True)

    return partial(
        open_websocket_over, open_stream, host_header, resource, subprotocols=subprotocols,
        headers=headers, connect_timeout=connect_timeout, close_timeout=close_timeout,
        max_message_size=max_message_size, target=url,
    )


#: Seconds to let our close frame go out when the block is being cancelled.
CANCELLED_CLOSE_WAIT = 0.05


@contextlib.asynccontextmanager
async def open_websocket_over(
    open_stream: Callable[[], Awaitable[trio.abc.Stream]], host: str, resource: str, *,
    subprotocols: Sequence[str], headers: list[tuple[bytes, bytes]], connect_timeout: float,
    close_timeout: float, max_message_size: int = MAX_MESSAGE_SIZE, target: str = "the server",
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a stream, run the WebSocket handshake over it, yield the connection.

    The stream is ours, so it is closed whatever happens, a refused handshake
    included (``open_websocket_url`` leaves the socket of a refused handshake to
    the garbage collector). Exceptions leave as single exceptions, not groups,
    and are mapped with :func:`map_exceptions`.

    Raises:
        ConnectionClosed: no stream, or no handshake within ``connect_timeout``.
        HandshakeRejected: the server answered with an HTTP status.
    """
    stream: trio.abc.Stream | None = None
    try:
        with map_exceptions(target), collapse_groups():
            async with trio.open_nursery() as nursery:
                ws: trio_websocket.WebSocketConnection | None = None
                with trio.move_on_after(connect_timeout):
                    try:
                        stream = await open_stream()
                    except OSError as exc:
                        raise ConnectionClosed(
                            f"cannot connect to {target}: {_os_text(exc)}") from exc
                    ws = await trio_websocket.wrap_client_stream(
                        # trio-websocket annotates socket streams, but any Stream works.
                        nursery, cast(trio.SocketStream, stream), host, resource,
                        subprotocols=list(subprotocols), extra_headers=headers,
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=max_message_size,
                    )
                if ws is None:
                    raise ConnectionClosed(f"timed out connecting to {target} "
                                           f"(connect_timeout {connect_timeout:g} s)")
                try:
                    yield ws
                finally:
                    # When we are being cancelled, trio-websocket's reader is too: the
                    # server's close reply would never be read, so send our close frame
                    # and do not wait out close_timeout for the reply.
                    cancelled = trio.current_effective_deadline() == -math.inf
                    wait = CANCELLED_CLOSE_WAIT if cancelled else close_timeout
                    with trio.move_on_after(wait) as closing:
                        closing.shield = True
                        await ws.aclose()
                    # The nursery holds trio-websocket's reader alone. It ends when the
                    # server closes the TCP connection after the closing handshake;
                    # cancelling it now would leave a close already under way (aclose
                    # returns at once then) waiting for a reply nobody reads.
                    nursery.cancel_scope.deadline = trio.current_time() + close_timeout
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _convert(exc: BaseException, target: str) -> Exception | None:
    """The eventbus exception for a foreign one, or ``None`` to let it through."""
    if isinstance(exc, EventBusError):  # ConnectionClosed is an OSError too
        return None
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        return HandshakeRejected(exc.status_code, body)
    if isinstance(exc, trio_websocket.ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return ConnectionClosed("connection closed")
        return ConnectionClosed(
            "connection closed", close_code=reason.code, reason=reason.reason or ""
        )
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return ConnectionClosed(f"timed out connecting to {target}")
    if isinstance(exc, trio_websocket.DisconnectionTimeout):
        return ConnectionClosed(f"timed out closing the connection to {target}")
    if isinstance(exc, trio_websocket.HandshakeError):
        cause = exc.__cause__
        if isinstance(cause, OSError):
            return ConnectionClosed(f"cannot connect to {target}: {_os_text(cause)}")
        return ConnectionClosed(f"the handshake with {target} failed: {exc!r}")
    if isinstance(exc, OSError):
        return ConnectionClosed(f"connection to {target} lost: {_os_text(exc)}")
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        return ConnectionClosed(f"connection to {target} lost")
    if isinstance(exc, h11.ProtocolError | wsproto.utilities.ProtocolError):
        # trio-websocket lets these through when a server breaks the opening
        # handshake (a subprotocol that was not offered, say).
        return ConnectionClosed(f"the handshake with {target} failed: {exc}")
    return None


def _os_text(exc: OSError) -> str:
    text = exc.strerror or str(exc) or type(exc).__name__
    # trio's "all attempts to connect ... failed" keeps the reasons in its cause.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = {inner.strerror for inner in cause.exceptions
                   if isinstance(inner, OSError) and inner.strerror}
        if reasons:
            text += f" ({', '.join(sorted(reasons))})"
    return text


@contextlib.contextmanager
def map_exceptions(target: str) -> Iterator[None]:
    """Convert trio-websocket's and the network's exceptions, ``raise ... from`` them.

    - ``ConnectionRejected`` (an HTTP answer instead of the upgrade) becomes
      :class:`~eventbus.HandshakeRejected` with its status and body;
    - ``ConnectionClosed``, connection and disconnection timeouts, ``OSError``
      (refused, unreachable, reset) and broken streams become
      :class:`~eventbus.ConnectionClosed`, with the close code when there is one.

    An exception group holding exactly one such exception (as a nursery raises
    it) is converted the same way. Anything else passes through unchanged.

    Args:
        target: How to name the server in messages (its URL).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        sole = _sole_exception(group)
        mapped = None if sole is None else _convert(sole, target)
        if mapped is None:
            raise
        raise mapped from sole
    except Exception as exc:
        mapped = _convert(exc, target)
        if mapped is None:
            raise
        raise mapped from exc


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception in a (possibly nested) group, ignoring ``trio.Cancelled``."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


@contextlib.contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise an exception group that holds a single exception as that exception.

    The client's nursery is an implementation detail: a caller of ``connect`` who
    raises ``KeyError`` in the block should get ``KeyError`` back, not a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        sole = _sole_exception(group)
        if sole is None:
            raise
        context = sole.__context__
        try:
            raise sole  # not chained: the group holds it, the chain would be circular
        finally:
            sole.__context__ = context
