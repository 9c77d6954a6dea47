import trio

import eventbus
import eventbus.testing

from chat import bus


async def main() -> None:
    async with eventbus.testing.connect(bus) as ada, eventbus.testing.connect(bus) as bob:
        await ada.call("greet", "Ada")
        async with bob.subscribe("lobby") as events:
            await ada.join("lobby")
            ack = await ada.call("say", {"room": "lobby", "text": "hi all"})
            print(f"ada's ack: {ack}")
            event = await anext(events)
            print(f"bob got: {event.data}")

        try:
            await ada.call("say", {"room": "random", "text": "anyone?"})
        except eventbus.Forbidden as exc:
            print(f"refused: {exc}")
        try:
            await ada.call("say", {"text": "where does this go?"})
        except eventbus.InvalidPayload as exc:
            print(f"refused: {exc}")


trio.run(main)
