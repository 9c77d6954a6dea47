import trio

import eventbus
import eventbus.testing

from chat import bus


async def main() -> None:
    async with eventbus.testing.connect(bus) as ada, eventbus.testing.connect(bus) as bob:
        async with bob.subscribe("lobby") as events:  # joins the room
            await ada.join("lobby")
            position = await ada.publish("lobby", "news", "the lobby is open")
            print(f"ada's message is number {position.seq} in the lobby")

            event = await anext(events)
            print(f"bob got {event.event!r} in {event.room}: {event.data}")

        try:
            await ada.join("kitchen")
        except eventbus.Forbidden as exc:
            print(f"no kitchen: {exc}")


trio.run(main)
