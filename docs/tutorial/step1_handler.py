import trio

import eventbus.testing

from chat import bus


async def main() -> None:
    async with eventbus.testing.connect(bus) as client:
        answer = await client.call("greet", "Ada")
        print(answer)


trio.run(main)
