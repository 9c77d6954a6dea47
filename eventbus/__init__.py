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
from .server import (
    CallResults,
    Connection,
    Delivery,
    Disconnect,
    EventBus,
    HandshakeRequest,
    ServerConfig,
)

__version__ = "0.1.0"

__all__ = [
    "CallResults",
    "CallTimeout",
    "CloseCode",
    "Connection",
    "ConnectionClosed",
    "Delivery",
    "Disconnect",
    "ErrorCode",
    "EventBus",
    "EventBusError",
    "Forbidden",
    "HandshakeRejected",
    "HandshakeRequest",
    "InternalError",
    "InvalidPayload",
    "LocalProtocolError",
    "ProtocolError",
    "RateLimited",
    "RemoteProtocolError",
    "RequestError",
    "ResumeFailed",
    "ServerConfig",
    "TooManyPending",
    "TooManyRooms",
    "Unavailable",
    "UnknownEvent",
    "__version__",
]
