"""eventbus: a trio WebSocket event bus with rooms and acknowledgments."""

from .client import Backoff, Client, Incoming, Subscription, connect
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
from .protocol import Position
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
    "Backoff",
    "CallResults",
    "CallTimeout",
    "Client",
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
    "Incoming",
    "InternalError",
    "InvalidPayload",
    "LocalProtocolError",
    "Position",
    "ProtocolError",
    "RateLimited",
    "RemoteProtocolError",
    "RequestError",
    "ResumeFailed",
    "ServerConfig",
    "Subscription",
    "TooManyPending",
    "TooManyRooms",
    "Unavailable",
    "UnknownEvent",
    "__version__",
    "connect",
]
