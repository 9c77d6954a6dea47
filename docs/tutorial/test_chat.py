import pytest
import trio

import eventbus
import eventbus.testing

from chat import bus


async def test_say_reaches_the_room_but_not_the_sender() -> None:
    async with (
        eventbus.testing.connect(bus) as ada,
        eventbus.testing.connect(bus) as bob,
        bob.subscribe("lobby") as events,
    ):
        await ada.join("lobby")
        assert await ada.call("say", {"room": "lobby", "text": "hi"}) == {"delivered": 1}
        with trio.fail_after(5):
            event = await anext(events)
        assert event.data == {"from": "someone", "text": "hi"}


async def test_say_needs_the_room() -> None:
    async with eventbus.testing.connect(bus) as ada:
        with pytest.raises(eventbus.Forbidden):
            await ada.call("say", {"room": "lobby", "text": "hi"})
