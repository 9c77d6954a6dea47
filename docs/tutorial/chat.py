"""The tutorial's app: a handler, a room and an ack."""

from __future__ import annotations

import attrs

from eventbus import Connection, EventBus, Forbidden

bus = EventBus()


@bus.on("greet")
async def greet(sock: Connection, name: str) -> str:
    sock.state["name"] = name  # remembered for this connection
    return f"Hello, {name}!"


# [rooms]
ROOMS = {"lobby", "random"}


@bus.authorize_join
def may_join(sock: Connection, room: str) -> bool:
    return room in ROOMS


@bus.authorize_publish
def may_publish(sock: Connection, room: str, event: str) -> bool:
    return room in sock.rooms  # members only
# [/rooms]


# [ack]
@attrs.frozen
class Message:
    room: str
    text: str


@bus.on("say")
async def say(sock: Connection, message: Message) -> dict[str, int]:
    if message.room not in sock.rooms:
        raise Forbidden(f"join {message.room!r} before you speak in it")
    name = sock.state.get("name", "someone")
    reached = sock.broadcast("said", {"from": name, "text": message.text}, to=message.room)
    return {"delivered": reached}
# [/ack]
