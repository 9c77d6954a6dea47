"""Authentication at the handshake, and hooks that authorize joins and publishes.

- ``authenticate`` sees the HTTP handshake (headers, query, path) and returns the
  connection's ``sock.state``, or refuses the connection with an HTTP status.
- ``authorize_join(sock, room)`` and ``authorize_publish(sock, room, event)`` decide
  what each client may do; a refusal answers the request with ``forbidden``.
- Closing with 4003 revokes a connection: the client does not reconnect.

Run: .venv/bin/python examples/rooms/authorization.py
"""

from __future__ import annotations

import logging

import trio

import eventbus
from eventbus import CloseCode, Connection, EventBus, HandshakeRejected, HandshakeRequest

# Who holds which token. A real application checks a signed token or a session here.
USERS = {
    "token-ada": {"name": "ada", "team": "red", "admin": True},
    "token-bob": {"name": "bob", "team": "blue", "admin": False},
}

bus = EventBus()  # rooms are closed to clients unless the hooks say otherwise


@bus.authenticate
async def authenticate(request: HandshakeRequest) -> dict[str, object]:
    header = request.header("authorization") or ""
    user = USERS.get(header.removeprefix("Bearer "))
    if user is None:
        raise HandshakeRejected(401, "a valid bearer token is required")
    return user  # becomes sock.state


@bus.authorize_join
def may_join(sock: Connection, room: str) -> bool:
    # Anyone may read the announcements; team rooms are for their team only.
    return room == "announcements" or room == f"team-{sock.state['team']}"


@bus.authorize_publish
def may_publish(sock: Connection, room: str, event: str) -> bool:
    if room == "announcements":
        return bool(sock.state["admin"])
    return room in sock.rooms  # members may talk in their own team room


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

        try:
            async with eventbus.connect(url, headers=bearer("stolen")):
                pass
        except HandshakeRejected as exc:
            print(f"a bad token is refused before the upgrade: {exc}")

        async with (
            eventbus.connect(url, headers=bearer("token-ada")) as ada,
            eventbus.connect(url, headers=bearer("token-bob")) as bob,
        ):
            await ada.join("team-red")
            await bob.join("announcements")
            print("ada joined team-red, bob joined announcements")
            try:
                await bob.join("team-red")
            except eventbus.Forbidden as exc:
                print(f"bob may not join team-red: {exc}")
            try:
                await bob.publish("announcements", "news", "free pizza")
            except eventbus.Forbidden as exc:
                print(f"bob may not publish announcements: {exc}")
            position = await ada.publish("announcements", "news", "all hands at 3")
            print(f"ada, an admin, published announcement seq {position.seq}")

            # Revoking: the server closes bob's connection with 4003, and bob's client
            # stops for good instead of reconnecting.
            lost = trio.Event()

            @bob.on_disconnect
            def disconnected(error: eventbus.ConnectionClosed) -> None:
                print(f"bob was disconnected with close code {error.close_code}")
                lost.set()

            bus.connections[bob.sid].close(CloseCode.UNAUTHORIZED, "token revoked")
            with trio.fail_after(5):
                await lost.wait()
            try:
                await bob.call("anything")
            except eventbus.ConnectionClosed as exc:
                print(f"bob's client will not reconnect: {exc}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    trio.run(main)
