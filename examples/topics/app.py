"""The bus of the topics example: two topics (rooms), ``prices`` and ``news``.

- Every service authenticates with a bearer token; the token decides its role.
- Readers may join the topics; only the publisher may publish news to them.
- Prices go through a server handler, ``prices.update``, which keeps the last
  price of each symbol (so that a subscriber can ask for a snapshot with
  ``prices.snapshot`` after it reconnects) and broadcasts the update.

Serve it alone with: .venv/bin/eventbus serve examples.topics.app:make_bus
"""

from __future__ import annotations

import attrs

from eventbus import Connection, EventBus, Forbidden, HandshakeRejected, HandshakeRequest

TOPICS = ("prices", "news")
#: The demo's tokens. A real deployment reads them from its secret store.
TOKENS = {"publisher-secret": "publisher", "reader-secret": "reader"}


@attrs.frozen
class PriceUpdate:
    """The payload of ``prices.update``; anything else is answered invalid_payload."""

    symbol: str
    price: float


def make_bus() -> EventBus:
    bus = EventBus()
    last_prices: dict[str, float] = {}

    @bus.authenticate
    async def authenticate(request: HandshakeRequest) -> dict[str, str]:
        token = (request.header("authorization") or "").removeprefix("Bearer ")
        role = TOKENS.get(token)
        if role is None:
            raise HandshakeRejected(401, "unknown token")
        return {"role": role}

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        return room in TOPICS

    @bus.authorize_publish
    def may_publish(sock: Connection, room: str, event: str) -> bool:
        return room == "news" and sock.state["role"] == "publisher"

    @bus.on("prices.update")
    async def update(sock: Connection, update: PriceUpdate) -> dict[str, int]:
        if sock.state["role"] != "publisher":
            raise Forbidden("only the publisher sets prices")
        last_prices[update.symbol] = update.price
        # The ack tells the publisher how many subscribers the update was handed to.
        delivered = bus.emit("price", attrs.asdict(update), to="prices")
        return {"delivered": delivered}

    @bus.on("prices.snapshot")
    async def snapshot(sock: Connection, data: object) -> dict[str, float]:
        return dict(last_prices)

    return bus
