import trio

import eventbus

from chat import bus


async def main() -> None:
    async with trio.open_nursery() as nursery:
        # Port 0: the system picks a free port; serve() reports its listeners.
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]

        async with eventbus.connect(f"ws://127.0.0.1:{port}/") as client:
            print(await client.call("greet", "Grace"))
            position = await client.join("random")
            print(f"joined random at seq {position.seq}")

        bus.shutdown()  # graceful: serve() returns once connections are closed


trio.run(main)
