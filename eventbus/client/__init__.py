"""The trio client: ``async with eventbus.connect(url) as client: ...``.

:func:`connect` opens a :class:`Client`, which emits and calls events, joins,
leaves and publishes to rooms, subscribes to rooms (:class:`Subscription`), runs
``on`` handlers for what the server sends (:class:`Incoming`), and reconnects with
:class:`Backoff` when the connection is lost.
"""

from .backoff import Backoff
from .client import Client, connect, open_client
from .messages import Incoming, Recovery
from .subscription import Subscription

__all__ = ["Backoff", "Client", "Incoming", "Recovery", "Subscription", "connect",
           "open_client"]
