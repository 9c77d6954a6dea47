"""Refetch a room's state when a reconnection did not recover it."""

import math
from collections.abc import Mapping
from typing import Any

import trio

import eventbus.testing
from eventbus import Backoff, CloseCode, Connection, EventBus, Recovery

# [bus]
# The chat keeps the default history; the ticker keeps only its last 3 messages.
bus = EventBus(open_rooms=True, history_rooms=["ticker=3/60"])
STATE: dict[str, Any] = {"chat": [], "ticker": {"ACME": 100}}  # the app's own state


@bus.on("state.get")
def get_state(sock: Connection, room: str) -> Any:
    return STATE[room]


def say(text: str) -> None:
    STATE["chat"].append(text)
    bus.emit("chat", text, to="chat")


def set_price(symbol: str, price: int) -> None:
    STATE["ticker"][symbol] = price
    bus.emit("price", {symbol: price}, to="ticker")
# [/bus]


async def main() -> None:
    refetched = trio.Event()
    async with trio.open_nursery() as nursery, \
            eventbus.testing.connect(bus, reconnect=Backoff(initial=0.05)) as client:
        # [client]
        shown: dict[str, Any] = {}  # what this client shows of each room
        stale, to_refetch = trio.open_memory_channel[str](math.inf)

        @client.on("chat")
        def on_chat(text: str) -> None:
            shown["chat"].append(text)
            print(f"chat: {text}")

        @client.on("price")
        def on_price(prices: dict[str, int]) -> None:
            shown["ticker"].update(prices)

        @client.on_resume
        def on_resume(recoveries: Mapping[str, Recovery]) -> None:
            for room, recovery in sorted(recoveries.items()):
                if recovery.recovered:
                    print(f"{room}: recovered, {recovery.replayed} replayed")
                else:
                    print(f"{room}: not recovered ({recovery.reason})")
                    stale.send_nowait(room)  # no request here: see below

        @client.on_gap
        def on_gap(room: str | None, count: int) -> None:
            if room is not None:
                stale.send_nowait(room)  # the server dropped messages of the room

        async def refetch() -> None:
            async for room in to_refetch:
                shown[room] = await client.call("state.get", room)
                print(f"{room}: refetched {shown[room]}")
                refetched.set()

        nursery.start_soon(refetch)
        for room in ("chat", "ticker"):
            await client.join(room)  # join first, then fetch: nothing falls in between
            shown[room] = await client.call("state.get", room)
        # [/client]
        print(f"ticker: {shown['ticker']}")

        # The server drops its connections, as a restarting node would; meanwhile the
        # chat gets a message, and the ticker more changes than it keeps.
        for sock in list(bus.connections.values()):
            sock.close(CloseCode.GOING_AWAY, "restarting")
        say("are you there?")
        for price in range(101, 106):
            set_price("ACME", price)

        with trio.fail_after(10):
            await refetched.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
