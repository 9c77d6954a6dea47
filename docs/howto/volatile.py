"""What happens to a client that does not read fast enough."""

import trio

import eventbus
from eventbus import Connection, Delivery, EventBus

# [bus]
bus = EventBus(open_rooms=True, send_queue_size=16)
PAYLOAD = "x" * 65_536


@bus.on("flood")
async def flood(sock: Connection, volatile: bool) -> None:
    delivery = Delivery.VOLATILE if volatile else Delivery.RELIABLE
    for n in range(400):  # 25 MiB at once: far more than the socket buffers hold
        sock.emit("tick", {"n": n, "pad": PAYLOAD}, delivery=delivery)
# [/bus]


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

        # [volatile]
        async with eventbus.connect(url) as client:
            received = 0
            missed = 0
            done = trio.Event()

            @client.on("tick")
            async def on_tick(data: dict[str, object]) -> None:
                nonlocal received
                received += 1
                if received == 1:
                    await trio.sleep(0.5)  # a slow consumer: its socket fills up
                if received + missed == 400:
                    done.set()

            @client.on_gap
            def on_gap(room: str | None, count: int) -> None:
                nonlocal missed
                missed += count  # the server says how many it dropped for us
                if received + missed == 400:
                    done.set()

            await client.emit("flood", True)
            with trio.fail_after(10):
                await done.wait()
            print(f"dropped some: {missed > 0}; received + dropped = {received + missed}")
        # [/volatile]

        # [reliable]
        @bus.on_disconnect
        async def gone(sock: Connection, why: eventbus.Disconnect) -> None:
            print(f"server: closed a slow consumer with {why.code}: {why.reason[:19]}")

        lost = trio.Event()
        async with eventbus.connect(url, reconnect=False) as client:

            @client.on("tick")
            async def slow_tick(data: dict[str, object]) -> None:
                await trio.sleep(0.5)

            client.on_disconnect(lambda error: lost.set())
            await client.emit("flood", False)
            with trio.fail_after(10):
                await lost.wait()
            print("client: the connection was lost")
        # [/reliable]
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
