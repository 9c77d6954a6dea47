"""Serving wss:// directly, with a throwaway certificate authority (trustme)."""

import ssl
from functools import partial

import trio
import trustme

import eventbus
from eventbus import Connection, EventBus

bus = EventBus()


@bus.on("hello")
async def hello(sock: Connection, data: object) -> str:
    return f"hello; TLS: {isinstance(sock.stream, trio.SSLStream)}"


async def main() -> None:
    ca = trustme.CA()  # in production: your certificate and key files
    # [tls]
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    # server_context.load_cert_chain("cert.pem", "key.pem") with real files

    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)  # clients trust the CA that signed it

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(bus.serve, "127.0.0.1", 0, ssl_context=server_context))
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with eventbus.connect(f"wss://localhost:{port}/",
                                    ssl_context=client_context) as client:
            print(await client.call("hello"))
        nursery.cancel_scope.cancel()
    # [/tls]


if __name__ == "__main__":
    trio.run(main)
