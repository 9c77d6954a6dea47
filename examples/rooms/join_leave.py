"""Join and leave rooms, from the client and from the server.

Run: .venv/bin/python examples/rooms/join_leave.py
"""

from __future__ import annotations

import logging
from typing import Any

import trio

import eventbus
from eventbus import Connection, EventBus

# open_rooms: any client may join, leave and publish to any room. Fine for a demo;
# authorization.py shows the hooks a real application uses instead.
bus = EventBus(open_rooms=True)


@bus.on("enter")
async def enter(sock: Connection, room: str) -> list[str]:
    """Server code may put a connection in a room itself (no authorization hook)."""
    sock.join(room)
    return sorted(sock.rooms)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

        async with eventbus.connect(url) as alice, eventbus.connect(url) as bob:
            got: list[Any] = []
            arrived = trio.Event()

            @bob.on("chat")
            def on_chat(data: Any) -> None:
                got.append(data)
                arrived.set()

            # join() answers with the room's position: (epoch, seq of its last message).
            position = await alice.join("lobby")
            print(f"alice joined lobby at seq {position.seq}")
            await bob.join("lobby")
            print(f"lobby has {len(bus.members('lobby'))} members")

            # A publish reaches every member but its sender.
            position = await alice.publish("lobby", "chat", "hello bob")
            print(f"alice published message seq {position.seq}")
            with trio.fail_after(5):
                await arrived.wait()
            print(f"bob received {got}")

            await bob.leave("lobby")
            print(f"after bob left, lobby has {len(bus.members('lobby'))} member")
            await alice.publish("lobby", "chat", "anyone there?")

            # Joining through a server handler: the server decides.
            rooms = await bob.call("enter", "kitchen")
            print(f"the server put bob in {rooms}")

            await alice.leave("lobby")
            print(f"lobby still exists: {bus.position('lobby') is not None}")
            print(f"bob received {len(got)} message in all")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    trio.run(main)
