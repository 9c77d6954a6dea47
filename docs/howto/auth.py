"""Authentication at the handshake, and authorization of rooms."""

import trio

import eventbus
from eventbus import CloseCode, Connection, EventBus, HandshakeRejected, HandshakeRequest

# [app]
SESSIONS = {"s3cr3t-ada": {"user": "ada", "teams": {"red"}, "admin": True},
            "s3cr3t-bob": {"user": "bob", "teams": {"blue"}, "admin": False}}

bus = EventBus(allowed_origins=["https://chat.example.com"])


@bus.authenticate
async def authenticate(request: HandshakeRequest) -> dict[str, object]:
    # A header from Python clients, a query parameter from browsers (a browser
    # cannot set headers on a WebSocket handshake; cookies work too).
    token = (request.header("authorization") or "").removeprefix("Bearer ")
    token = token or request.query.get("token", "")
    session = SESSIONS.get(token)
    if session is None:
        raise HandshakeRejected(401, "log in first")
    return session  # becomes sock.state


@bus.authorize_join
async def may_join(sock: Connection, room: str) -> bool:
    team = room.removeprefix("team-")
    return room == "lobby" or team in sock.state["teams"]


@bus.authorize_publish
def may_publish(sock: Connection, room: str, event: str) -> bool:
    return room in sock.rooms and (event != "announce" or sock.state["admin"])
# [/app]


async def main() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
# [client]
        try:
            async with eventbus.connect(url):
                pass
        except eventbus.HandshakeRejected as exc:
            print(f"without a token: {exc}")

        async with eventbus.connect(url + "?token=s3cr3t-bob") as bob:
            print(f"bob is {bus.connections[bob.sid].state['user']}")
            await bob.join("team-blue")
            try:
                await bob.join("team-red")
            except eventbus.Forbidden as exc:
                print(f"team-red: {exc.code}")
            try:
                await bob.publish("team-blue", "announce", "hello")
            except eventbus.Forbidden as exc:
                print(f"announce: {exc.code}")

            # Revoke: close with 4003; the client stops instead of reconnecting.
            bus.connections[bob.sid].close(CloseCode.UNAUTHORIZED, "session ended")
            try:
                await bob.call("anything")
            except eventbus.ConnectionClosed as exc:
                print(f"after revoking: close code {exc.close_code}")
# [/client]
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
