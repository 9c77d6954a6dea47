"""A message refused unread over the rate limit that cannot be read at all is still
answered, with ``rate_limited`` and no ack id (PROTOCOL.md section 12).

Over a real socket on 127.0.0.1, port 0, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import trio

from eventbus.protocol import ErrorReply

from .conftest import open_bus, raw_client, serving


async def test_an_unreadable_message_over_the_rate_is_refused_without_an_ack_id() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(rate=1, burst=1)) as port, raw_client(port) as client:
            # The burst lets one through at most (read, and found malformed); the
            # others are refused unread, which means reading their ack id from bytes
            # that hold none.
            for _ in range(3):
                await client.send_raw("not json at all")
            codes = []
            for _ in range(3):
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
                assert answer.ack_id is None
                codes.append(answer.code)
            assert "rate_limited" in codes
            assert set(codes) <= {"malformed", "rate_limited"}
