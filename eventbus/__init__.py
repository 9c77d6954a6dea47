"""eventbus: a trio WebSocket event bus with rooms and acknowledgments."""

from typing import TYPE_CHECKING, Any

# The codes and the exception tree load no I/O library; the client and the server
# (trio, wsproto, trio-websocket, cattrs) load on first use of one of their names,
# so that ``import eventbus.protocol``, which runs this file first, stays sans-IO.
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
    UnsupportedSubprotocol,
)
from .protocol import Position

if TYPE_CHECKING:
    from .client import Backoff, Client, Incoming, Recovery, Subscription, connect
    from .server import (
        CallResults,
        Connection,
        Delivery,
        Disconnect,
        EventBus,
        HandshakeRequest,
        ServerConfig,
    )

#: Where each lazily loaded name lives.
_LAZY = {
    **dict.fromkeys(("Backoff", "Client", "Incoming", "Recovery", "Subscription", "connect"),
                    "client"),
    **dict.fromkeys(
        ("CallResults", "Connection", "Delivery", "Disconnect", "EventBus",
         "HandshakeRequest", "ServerConfig"), "server"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "Recovery",
    "RemoteProtocolError",
    "RequestError",
    "ResumeFailed",
    "ServerConfig",
    "Subscription",
    "TooManyPending",
    "TooManyRooms",
    "Unavailable",
    "UnknownEvent",
    "UnsupportedSubprotocol",
    "__version__",
    "connect",
]
