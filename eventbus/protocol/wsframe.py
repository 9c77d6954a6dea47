"""Server-to-client WebSocket frames, built once and written to many sockets.

A server's frames are unmasked (RFC 6455 section 5.1), so the frame carrying a
broadcast is the same bytes for every recipient that uses the same codec.
"""

from __future__ import annotations

import struct

__all__ = ["server_frame"]

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def server_frame(payload: bytes, *, binary: bool) -> bytes:
    """One final, unmasked text or binary frame carrying ``payload`` whole.

    For a text frame ``payload`` must be UTF-8 (the JSON codec's output is).
    """
    first = _FIN_BINARY if binary else _FIN_TEXT
    size = len(payload)
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload
