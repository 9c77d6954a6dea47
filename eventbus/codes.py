"""Error codes and WebSocket close codes of protocol v1.

These enums are the single source of truth for the catalogues in
``protocol/PROTOCOL.md``; a test checks that every member is documented there.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "ErrorCode", "NotRecovered"]


class ErrorCode(enum.StrEnum):
    """The ``code`` field of an error packet (type 8).

    Codes are lowercase ASCII words joined by ``_``. A receiver must accept codes it
    does not know (a newer peer may send them) and treat them like ``internal_error``.
    """

    #: The frame is not valid JSON or msgpack: a syntax error, invalid UTF-8,
    #: a truncated document, trailing bytes, NaN or Infinity.
    MALFORMED = "malformed"
    #: A binary frame under the JSON codec, or a text frame under msgpack.
    WRONG_FRAME_TYPE = "wrong_frame_type"
    #: The frame decoded, but is not an array whose first element is a known
    #: packet type for this direction.
    UNKNOWN_TYPE = "unknown_type"
    #: A known packet type with the wrong number of fields, a field of the wrong
    #: type, an ack id out of range, or data that breaks the data rules.
    INVALID_PACKET = "invalid_packet"
    #: An event or room name that is empty, too long, has control characters,
    #: or is reserved (starts with ``$``).
    INVALID_NAME = "invalid_name"
    #: The server's application refused the request (join, publish or event).
    FORBIDDEN = "forbidden"
    #: No handler is registered for the event.
    UNKNOWN_EVENT = "unknown_event"
    #: The event's data does not have the shape its handler declares.
    INVALID_PAYLOAD = "invalid_payload"
    #: The connection sent packets faster than its rate limit allows.
    RATE_LIMITED = "rate_limited"
    #: A join would exceed the rooms-per-connection limit.
    TOO_MANY_ROOMS = "too_many_rooms"
    #: A request would exceed the limit of requests awaiting an answer.
    TOO_MANY_PENDING = "too_many_pending"
    #: A message could not be encoded for this connection's codec (binary data
    #: for a JSON connection, or a value outside the data rules).
    UNENCODABLE = "unencodable"
    #: A resume request presented a wrong or expired token, or one of another sid;
    #: it was not the connection's first request; or it reached a server that does
    #: not keep sessions.
    RESUME_FAILED = "resume_failed"
    #: The server is shutting down and takes no new requests.
    UNAVAILABLE = "unavailable"
    #: The handler failed; details are in the server's log, never on the wire.
    INTERNAL_ERROR = "internal_error"


class NotRecovered(enum.StrEnum):
    """Why a room was not recovered by a RESUME: the ``reason`` of its verdict
    (PROTOCOL.md section 9.4). A receiver treats a reason it does not know as not
    recovered all the same."""

    #: The room keeps no history.
    HISTORY_OFF = "history_off"
    #: The room's numbering began again (history lost), or the position never was.
    EPOCH_CHANGED = "epoch_changed"
    #: Messages after the position are no longer all in the history.
    WINDOW_EXCEEDED = "window_exceeded"
    #: More messages to replay than the server replays at once.
    TOO_FAR_BEHIND = "too_far_behind"
    #: The application refused the join; not joined.
    FORBIDDEN = "forbidden"
    #: The connection is in ``max_rooms`` rooms already; not joined.
    TOO_MANY_ROOMS = "too_many_rooms"
    #: The server cannot read the room's history now; not joined.
    UNAVAILABLE = "unavailable"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4)."""

    #: The application closed the connection on purpose.
    NORMAL = 1000
    #: The server is shutting down (or restarting); reconnect later.
    GOING_AWAY = 1001
    #: The peer broke the WebSocket framing rules (not the event protocol).
    PROTOCOL_ERROR = 1002
    #: A text frame was not valid UTF-8.
    INVALID_DATA = 1007
    #: A message was larger than the advertised ``max_frame``.
    MESSAGE_TOO_BIG = 1009
    #: The server hit an unexpected condition.
    INTERNAL_ERROR = 1011
    #: Too many malformed or invalid packets in a row.
    TOO_MANY_ERRORS = 4000
    #: The client did not read fast enough and a reliable message would not fit
    #: in its outbound queue.
    SLOW_CONSUMER = 4001
    #: The client did not answer a ping within ``ping_timeout``.
    HEARTBEAT_TIMEOUT = 4002
    #: The application revoked the connection's authorization.
    UNAUTHORIZED = 4003
    #: Another connection resumed this session with its resume token.
    SESSION_TAKEN_OVER = 4004
