"""The trio server: connections, rooms, handlers and delivery."""

from .app import CallResults, EventBus
from .config import ServerConfig
from .connection import Connection, Disconnect
from .http import HandshakeRequest
from .outbox import Delivery

__all__ = [
    "CallResults",
    "Connection",
    "Delivery",
    "Disconnect",
    "EventBus",
    "HandshakeRequest",
    "ServerConfig",
]
