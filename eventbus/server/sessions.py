"""Sessions and their resume tokens.

A session begins with a connection, and goes on in each connection that resumes it
(PROTOCOL.md section 9.1). Its resume token proves that a client owns it, and any
node of the bus can check one without state: it is the session id, the time it was
issued, and an HMAC-SHA256 (128 bits of it) over the connection's sid, the session
and that time, made with a secret the nodes share. A token is valid ``ttl``
seconds after it was issued; the server gives a live connection a fresh one
before that.

Sans-IO: the caller passes the wall-clock time and the secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["Tokens"]

# The issue time in seconds, as 8 hex digits (good until 2106), then the MAC in 22
# base64url characters: 30 characters after the session id.
_TIME = 8
_MAC = 22
#: The longest session id a token can carry (tokens are at most 64 characters).
MAX_SESSION = 64 - _TIME - _MAC


def _mac(secret: bytes, sid: str, session: str, issued: int) -> str:
    digest = hmac.new(secret, f"{sid}\0{session}\0{issued}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


class Tokens:
    """Issues and checks resume tokens.

    Args:
        ttl: Seconds a token is valid after it was issued.
    """

    __slots__ = ("ttl",)

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl

    def issue(self, sid: str, session: str, now: float, secret: bytes) -> str:
        """The token of connection ``sid`` of ``session``."""
        if not 0 < len(session) <= MAX_SESSION:
            raise ValueError(f"a session id has 1 to {MAX_SESSION} characters")
        issued = int(now)
        return f"{session}{issued:08x}{_mac(secret, sid, session, issued)}"

    def issued_at(self, token: str) -> int:
        """When a token this class issued was issued."""
        return int(token[-_MAC - _TIME:-_MAC], 16)

    def verify(self, sid: str, token: str, now: float, secrets: Sequence[bytes]) -> str | None:
        """The session that ``token`` proves for connection ``sid``, or ``None``
        (wrong, expired, of another sid, or signed with none of ``secrets``)."""
        session, stamp, mac = token[:-_MAC - _TIME], token[-_MAC - _TIME:-_MAC], token[-_MAC:]
        if not session or len(stamp) != _TIME:
            return None
        try:
            issued = int(stamp, 16)
        except ValueError:
            return None
        # Every secret is tried, whatever matches first: no timing tells which.
        valid = False
        for secret in secrets:
            valid |= hmac.compare_digest(mac, _mac(secret, sid, session, issued))
        if not valid or not issued - 60 <= now <= issued + self.ttl:
            return None
        return session
