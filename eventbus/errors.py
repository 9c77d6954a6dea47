"""The exception hierarchy of eventbus.

Every exception the package raises on purpose derives from :class:`EventBusError`::

    EventBusError
    ├── RequestError                 has a wire code; travels in an error packet
    │   ├── ProtocolError            a packet breaks protocol/PROTOCOL.md
    │   │   ├── RemoteProtocolError  ...and the peer sent it
    │   │   └── LocalProtocolError   ...and we were about to send it
    │   ├── Forbidden                forbidden
    │   ├── UnknownEvent             unknown_event
    │   ├── InvalidPayload           invalid_payload
    │   ├── RateLimited              rate_limited
    │   ├── TooManyRooms             too_many_rooms
    │   ├── TooManyPending           too_many_pending
    │   ├── ResumeFailed             resume_failed
    │   ├── Unavailable              unavailable
    │   └── InternalError            internal_error (and any code we do not know)
    ├── HandshakeRejected            the WebSocket handshake was refused (HTTP status)
    ├── UnsupportedSubprotocol       also a ValueError: no offered subprotocol is known
    ├── CallTimeout                  also a TimeoutError: no answer in time
    └── ConnectionClosed             also a ConnectionError: the connection ended

A server handler raises a :class:`RequestError` (or a subclass) to answer its
request with that code. A client that receives an error packet raises the subclass
that matches the code, built by :func:`error_from_code`.

This module and codes.py import nothing else of eventbus, so the sans-IO
protocol package can use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .codes import CloseCode, ErrorCode

__all__ = [
    "CallTimeout",
    "ConnectionClosed",
    "EventBusError",
    "Forbidden",
    "HandshakeRejected",
    "InternalError",
    "InvalidPayload",
    "LocalProtocolError",
    "ProtocolError",
    "RateLimited",
    "RemoteProtocolError",
    "RequestError",
    "ResumeFailed",
    "TooManyPending",
    "TooManyRooms",
    "Unavailable",
    "UnknownEvent",
    "UnsupportedSubprotocol",
    "error_from_code",
]


class EventBusError(Exception):
    """Base class of every error eventbus raises on purpose."""


class RequestError(EventBusError):
    """An error with a code from the catalogue, sent or received in an error packet.

    Args:
        message: Human-readable text. It is sent to the peer, so it must not hold
            secrets or tracebacks.
        code: The wire code. Subclasses fix it; on this base class it may be any
            code, including one this version does not know.
    """

    default_code: ClassVar[str] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code: str = code if code is not None else self.default_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.message else f"[{self.code}]"


class ProtocolError(RequestError):
    """A packet breaks the wire protocol."""

    default_code = ErrorCode.INVALID_PACKET


class RemoteProtocolError(ProtocolError):
    """The peer sent a frame that breaks the protocol; the caller may answer with an
    error packet carrying :attr:`code` and keep the connection open.

    :attr:`ack_id` is the ack id of the broken request when it could still be read,
    so that the error answers the request; otherwise ``None``.
    """

    ack_id: int | None = None


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol cannot carry (for example binary data
    to a JSON connection); nothing was sent."""

    default_code = ErrorCode.UNENCODABLE


class Forbidden(RequestError):
    """The application refused the request."""

    default_code = ErrorCode.FORBIDDEN


class UnknownEvent(RequestError):
    """No handler is registered for the event."""

    default_code = ErrorCode.UNKNOWN_EVENT


class InvalidPayload(RequestError):
    """The event's data does not match the shape its handler declares."""

    default_code = ErrorCode.INVALID_PAYLOAD


class RateLimited(RequestError):
    """The connection is over its inbound rate limit."""

    default_code = ErrorCode.RATE_LIMITED


class TooManyRooms(RequestError):
    """The join would exceed the rooms-per-connection limit."""

    default_code = ErrorCode.TOO_MANY_ROOMS


class TooManyPending(RequestError):
    """Too many requests are awaiting an answer on this connection."""

    default_code = ErrorCode.TOO_MANY_PENDING


class ResumeFailed(RequestError):
    """The session could not be resumed; join the rooms afresh."""

    default_code = ErrorCode.RESUME_FAILED


class Unavailable(RequestError):
    """The server is shutting down."""

    default_code = ErrorCode.UNAVAILABLE


class InternalError(RequestError):
    """The peer failed while handling the request (or sent a code we do not know)."""

    default_code = ErrorCode.INTERNAL_ERROR


class HandshakeRejected(EventBusError):
    """The WebSocket handshake was refused before the connection opened.

    The server raises it from its ``authenticate`` hook to answer with an HTTP
    status; the client raises it when the server answered with one.

    Args:
        status: The HTTP status code (400, 401, 403, ...).
        message: The reason, sent as the response body.
        headers: Extra response headers (for example ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, message: str = "", *, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.message else f"HTTP {self.status}"


class UnsupportedSubprotocol(EventBusError, ValueError):
    """A client offered WebSocket subprotocols, none of which this version speaks.

    The sans-IO codec raises it; the server answers the handshake with HTTP 400.
    """


class CallTimeout(EventBusError, TimeoutError):
    """No answer arrived within the call's timeout."""


class ConnectionClosed(EventBusError, ConnectionError):
    """The connection closed (or was never open) while the operation needed it.

    Args:
        message: What happened.
        close_code: The WebSocket close code, when one was received or sent.
        reason: The close reason text, if any.
    """

    def __init__(
        self, message: str = "connection closed", *, close_code: int | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else "connection closed"
        if self.close_code is not None:
            name = _close_name(self.close_code)
            text += f" (close code {self.close_code}{name}"
            text += f": {self.reason})" if self.reason else ")"
        return text


def _close_name(code: int) -> str:
    try:
        return f" {CloseCode(code).name.lower()}"
    except ValueError:
        return ""


_BY_CODE: dict[str, type[RequestError]] = {
    cls.default_code: cls
    for cls in (
        Forbidden, UnknownEvent, InvalidPayload, RateLimited, TooManyRooms,
        TooManyPending, ResumeFailed, Unavailable, InternalError,
    )
}
_PROTOCOL_CODES = frozenset({
    ErrorCode.MALFORMED, ErrorCode.WRONG_FRAME_TYPE, ErrorCode.UNKNOWN_TYPE,
    ErrorCode.INVALID_PACKET, ErrorCode.INVALID_NAME, ErrorCode.UNENCODABLE,
})


def error_from_code(code: str, message: str) -> RequestError:
    """Build the exception that matches an error packet received from the peer.

    Protocol codes give a :class:`ProtocolError` (the peer says *we* broke the
    protocol); unknown codes give an :class:`InternalError` that keeps the code.
    """
    if code in _PROTOCOL_CODES:
        return ProtocolError(message, code=code)
    return _BY_CODE.get(code, InternalError)(message, code=code)
