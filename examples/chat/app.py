"""The chat's bus: rooms, nicknames, messages, and who joined or left.

Clients cannot join rooms or publish by themselves on this bus (no authorization
hooks, ``open_rooms`` off): every action goes through a handler, so the server
stamps each message with the sender's nickname and announces presence.

Events a page sends (all with an ack):
    ``chat.join`` {"room"}  -> {"room", "members", "history"}   leaves the previous room
    ``chat.say``  {"text"}  -> the message as the others receive it
    ``chat.rooms`` null     -> [{"name", "members"}]
Events the bus sends:
    ``message`` {"id", "nick", "text", "ts"}                 to a room, except the sender
    ``presence`` {"nick", "room", "action": joined | left}   to a room, except that member
    ``rooms`` [{"name", "members"}]                           to everyone, when counts change
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from eventbus import (
    Connection,
    Disconnect,
    EventBus,
    Forbidden,
    HandshakeRejected,
    HandshakeRequest,
    InvalidPayload,
)

ROOMS = ("lobby", "python", "random")
HISTORY = 50
NICK = re.compile(r"^[\w .-]{1,20}$")


@attrs.frozen
class Join:
    room: str


@attrs.frozen
class Say:
    text: str


def make_bus(allowed_origins: Sequence[str] | None = None) -> EventBus:
    """The chat bus; ``allowed_origins`` lists the pages that may connect (the
    browser sends its page's origin with the handshake)."""
    bus = EventBus(allowed_origins=allowed_origins)
    history: dict[str, deque[dict[str, Any]]] = {room: deque(maxlen=HISTORY) for room in ROOMS}
    ids = itertools.count(1)

    def nick(sock: Connection) -> str:
        return str(sock.state["nick"])

    def room_counts() -> list[dict[str, Any]]:
        return [{"name": room, "members": len(bus.members(room))} for room in ROOMS]

    def leave_current(sock: Connection) -> None:
        room = sock.state.get("room")
        if room is not None:
            sock.leave(room)
            sock.state["room"] = None
            bus.emit("presence", {"nick": nick(sock), "room": room, "action": "left"}, to=room)

    @bus.authenticate
    async def authenticate(request: HandshakeRequest) -> dict[str, Any]:
        name = request.query.get("nick", "").strip()
        if not NICK.match(name):
            raise HandshakeRejected(400, "choose a nickname of 1 to 20 letters or digits")
        return {"nick": name, "room": None}

    @bus.on("chat.join")
    async def join(sock: Connection, request: Join) -> dict[str, Any]:
        if request.room not in ROOMS:
            raise Forbidden(f"there is no room {request.room!r}")
        if sock.state["room"] != request.room:
            leave_current(sock)
            sock.join(request.room)
            sock.state["room"] = request.room
            sock.broadcast("presence", {"nick": nick(sock), "room": request.room,
                                        "action": "joined"}, to=request.room)
            bus.emit("rooms", room_counts())
        return {
            "room": request.room,
            "members": sorted(nick(member) for member in bus.members(request.room)),
            "history": list(history[request.room]),
        }

    @bus.on("chat.say")
    async def say(sock: Connection, request: Say) -> dict[str, Any]:
        room = sock.state["room"]
        if room is None:
            raise Forbidden("join a room first")
        text = request.text.strip()
        if not 0 < len(text) <= 2000:
            raise InvalidPayload("a message has 1 to 2000 characters")
        message = {"id": next(ids), "nick": nick(sock), "text": text, "ts": time.time()}
        history[room].append(message)
        sock.broadcast("message", message, to=room)
        return message  # the ack: the sender shows its message once the server has it

    @bus.on("chat.rooms")
    async def rooms(sock: Connection, data: object) -> list[dict[str, Any]]:
        return room_counts()

    @bus.on_disconnect
    async def disconnected(sock: Connection, why: Disconnect) -> None:
        # The bus has already removed the connection from its rooms; the room it
        # was in is in its state.
        if sock.state.get("room") is not None:
            leave_current(sock)
            bus.emit("rooms", room_counts())

    return bus
