"""Acks both ways, timeouts, and errors."""

import trio

import eventbus
import eventbus.testing
from eventbus import Connection, EventBus

bus = EventBus(open_rooms=True)


@bus.on("slow")
async def slow(sock: Connection, seconds: float) -> str:
    await trio.sleep(seconds)
    return "done"


@bus.on("ask-room")
async def ask_room(sock: Connection, room: str) -> dict[str, object]:
    # [bus-call]
    results = await bus.call("confirm", "deploy now?", to=room, timeout=0.5)
    # results.answers: {sid: data}, .errors: {sid: RequestError or ConnectionClosed},
    # .timed_out: [sid, ...]
    # [/bus-call]
    return {"answers": sorted(results.answers.values()), "errors": len(results.errors),
            "timed_out": len(results.timed_out)}


async def main() -> None:
    async with eventbus.testing.connect(bus) as client, eventbus.testing.connect(bus) as other:
        # [client-call]
        try:
            await client.call("slow", 2.0, timeout=0.2)
        except eventbus.CallTimeout as exc:
            print(f"timed out: {exc}")
        try:
            await client.call("no-such-event")
        except eventbus.UnknownEvent as exc:
            print(f"error answer: {exc.code}")
        # [/client-call]

        # [server-call]
        @client.on("confirm")
        def confirm(question: str) -> bool:
            return True  # the return value is the answer

        @other.on("confirm")
        def refuse(question: str) -> bool:
            raise eventbus.Forbidden("not me")  # an error answer

        await client.join("ops")
        await other.join("ops")
        print(await client.call("ask-room", "ops"))
        # [/server-call]


if __name__ == "__main__":
    trio.run(main)
