"""The names of a bus's keys and channels in Redis (the table in the package docs).

Every name starts with the prefix, so that two apps can share one Redis; the keys
and the channel of one room share the hash tag ``{prefix:room}``, so that they live
in one slot of a Redis Cluster.
"""

from __future__ import annotations

import re

__all__ = ["PREFIX", "Keys"]

#: What a prefix may be made of.
PREFIX = re.compile(r"[A-Za-z0-9_.-]+")


class Keys:
    """The names of one bus: those that start with ``prefix``.

    Raises:
        ValueError: a prefix that :data:`PREFIX` does not match.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if not PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r}: use letters, digits, '_', '.' and '-'")
        self.prefix = prefix

    def room(self, room: str, kind: str) -> str:
        """``kind``: ``m`` the position, ``p`` the members, ``c`` the channel, ``h`` the
        history, ``i`` the publish ids the history holds."""
        return f"{{{self.prefix}:{room}}}:{kind}"

    def room_keys(self, room: str) -> list[str]:
        """The keys the room scripts take: the position, the history, its publish ids."""
        prefix = f"{{{self.prefix}:{room}}}:"
        return [prefix + "m", prefix + "h", prefix + "i"]

    def node_channel(self, node: str) -> str:
        """A node's channel: signals to that node, and its probes."""
        return f"{self.prefix}:node:{node}"

    def alive(self, node: str) -> str:
        """A node's liveness key."""
        return f"{self.prefix}:alive:{node}"

    def secret(self) -> str:
        """The secret the nodes share (they sign resume tokens with it)."""
        return f"{self.prefix}:secret"
