"""eventbus: a trio WebSocket event bus with rooms and acknowledgments."""

from .codes import CloseCode, ErrorCode
from .errors import (
    CallTimeout,
    ConnectionClosed,
    EventBusError,
    Forbidden,
    HandshakeRejected,
    InternalError,
    InvalidPayload,
    LocalProtocolError,
    ProtocolError,
    RateLimited,
    RemoteProtocolError,
    RequestError,
    ResumeFailed,
    TooManyPending,
    TooManyRooms,
    Unavailable,
    UnknownEvent,
)

__version__ = "0.1.0"

__all__ = [
    "CallTimeout",
    "CloseCode",
    "ConnectionClosed",
    "ErrorCode",
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
    "__version__",
]
