"""Ask a whole room for answers with ``bus.call`` and collect them.

Each member gets its own server call (an event with an ack id) and answers it from
an ``on`` handler. ``bus.call`` waits for every answer, or for the timeout, and
returns them sorted into answers, errors and the members that did not answer.

Run: .venv/bin/python examples/rooms/room_acks.py
"""

from __future__ import annotations

import logging

import trio

import eventbus
from eventbus import EventBus, Forbidden

bus = EventBus(open_rooms=True)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

        async with (
            eventbus.connect(url) as ada, eventbus.connect(url) as bob,
            eventbus.connect(url) as cy, eventbus.connect(url) as dee,
        ):
            names = {ada.sid: "ada", bob.sid: "bob", cy.sid: "cy", dee.sid: "dee"}

            @ada.on("vote")
            def ada_votes(question: str) -> str:
                return "yes"  # the return value is the answer

            @bob.on("vote")
            def bob_refuses(question: str) -> None:
                raise Forbidden("bob does not vote")  # an error answer, with its code

            # cy registers no "vote" handler: the client answers unknown_event.

            @dee.on("vote")
            async def dee_is_slow(question: str) -> str:
                await trio.sleep(1)  # longer than the call's timeout
                return "too late"

            for client in (ada, bob, cy, dee):
                await client.join("council")

            results = await bus.call("vote", "lunch at noon?", to="council", timeout=0.5)
            for sid, answer in results.answers.items():
                print(f"{names[sid]} answered {answer!r}")
            for sid, error in sorted(results.errors.items(), key=lambda item: names[item[0]]):
                print(f"{names[sid]} answered with an error: {error}")
            for sid in results.timed_out:
                print(f"{names[sid]} did not answer in time")

            # One connection can be asked alone, too.
            sock = bus.connections[ada.sid]
            print(f"ada alone answered {await sock.call('vote', 'coffee?')!r}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    trio.run(main)
