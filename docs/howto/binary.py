"""Binary data over msgpack, and what JSON clients get instead."""

import struct

import trio

import eventbus
import eventbus.testing
from eventbus import Connection, EventBus

bus = EventBus(open_rooms=True)


# [server]
@bus.on("thumbnail")
async def thumbnail(sock: Connection, image: bytes) -> dict[str, object]:
    # msgpack's bin type arrives as bytes, and bytes go back as bin.
    return {"size": len(image), "head": image[:4]}
# [/server]


async def main() -> None:
    # [clients]
    async with (
        eventbus.testing.connect(bus, codec="msgpack") as camera,
        eventbus.testing.connect(bus, codec="msgpack") as viewer,
        eventbus.testing.connect(bus) as browser,  # JSON
    ):
        print(await camera.call("thumbnail", b"\x89PNG" + bytes(60)))

        frames = trio.open_memory_channel[bytes](10)
        errors = trio.open_memory_channel[eventbus.RequestError](10)
        viewer.on("frame")(frames[0].send_nowait)
        browser.on_error(errors[0].send_nowait)  # errors that answer no request
        await viewer.join("cams")
        await browser.join("cams")

        packed = struct.pack("<IHH", 7, 640, 480)  # frame number, width, height
        await camera.publish("cams", "frame", packed)
        with trio.fail_after(5):
            print(struct.unpack("<IHH", await frames[1].receive()))
            print(f"the JSON client got: {(await errors[1].receive()).code}")

        try:
            await browser.emit("upload", b"\x00\x01")
        except eventbus.LocalProtocolError as exc:
            print(f"JSON cannot send bytes: {exc.code}")
    # [/clients]


if __name__ == "__main__":
    trio.run(main)
