"""Broadcast to a room except the sender, from a server handler and from a client.

Run: .venv/bin/python examples/rooms/broadcast.py
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import trio

import eventbus
from eventbus import Connection, EventBus

bus = EventBus(open_rooms=True)


@bus.on("shout")
async def shout(sock: Connection, text: str) -> int:
    # Every member of the room but the sender; the return value is the ack.
    return sock.broadcast("shouted", {"from": sock.state["name"], "text": text}, to="stage")


@bus.authenticate
async def name_from_query(request: eventbus.HandshakeRequest) -> dict[str, str]:
    # ws://host:port/?name=ada -> sock.state; the authorization example checks tokens.
    return {"name": request.query.get("name", "anonymous")}


async def main() -> None:
    received: defaultdict[str, list[str]] = defaultdict(list)
    all_arrived = trio.Event()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]

        async with (
            eventbus.connect(f"ws://127.0.0.1:{port}/?name=ada") as ada,
            eventbus.connect(f"ws://127.0.0.1:{port}/?name=bob") as bob,
            eventbus.connect(f"ws://127.0.0.1:{port}/?name=cy") as cy,
        ):
            for name, client in (("ada", ada), ("bob", bob), ("cy", cy)):
                await client.join("stage")

                def record(data: Any, incoming: eventbus.Incoming, name: str = name) -> None:
                    received[name].append(f"{incoming.event}: {data}")
                    if sum(len(seen) for seen in received.values()) == 7:
                        all_arrived.set()

                client.on("shouted")(record)
                client.on("said")(record)
                client.on("announced")(record)

            # 1. A server handler broadcasts for its caller, skipping it.
            reached = await ada.call("shout", "hello from ada")
            print(f"ada's shout reached {reached} members")

            # 2. A client publish skips its sender too.
            await bob.publish("stage", "said", "bob here")

            # 3. Server code can send to the whole room, or skip anyone it likes.
            everyone = bus.emit("announced", "the show starts", to="stage")
            print(f"the server's announcement reached {everyone} members")

            with trio.fail_after(5):
                await all_arrived.wait()  # 2 shouted + 2 said + 3 announced
        nursery.cancel_scope.cancel()
    for name in ("ada", "bob", "cy"):
        print(f"{name} received: {'; '.join(sorted(received[name]))}")


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    trio.run(main)
