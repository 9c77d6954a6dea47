"""The Redis adapter: the nodes of a bus in several processes, on one machine or many.

Install it with the ``redis`` extra (``pip install eventbus[redis]``), which brings
coredis, a Redis client that runs on trio::

    adapter = RedisAdapter("redis://127.0.0.1:6379/0", prefix="myapp")

Keys and channels
-----------------
Every name starts with the prefix (``eventbus`` by default), so that two apps can
share one Redis; the keys and the channel of one room share one hash tag,
``{prefix:room}``, so that they live in one slot of a Redis Cluster:

========================  =========================================================
``{P:R}:m``               the room's position: a hash ``e`` (epoch), ``s`` (seq),
                          ``b`` (the bytes its history holds), ``k`` (the seq of the
                          last message kept), kept ``room_ttl`` (30 days) after its
                          last use
``{P:R}:h``               the room's history: a stream, one entry per message at id
                          ``<seq>-0`` (``m`` the message's tail, ``t`` when it was
                          kept in ms, ``n`` its size, ``i`` its publish key), kept
                          the history's age after the last message
``{P:R}:i``               the publish ids the history holds: a hash
                          ``<session>:<publish id> -> seq``, kept as long
``{P:R}:p``               the room's members: a hash ``sid -> node``
``{P:R}:c``               the room's channel: its messages and the signals to its
                          nodes
``P:node:<id>``           a node's channel: signals to that node, and its probes
``P:alive:<id>``          a node's liveness: a key that lives ``liveness_ttl``
``P:secret``              the secret the nodes share (they sign resume tokens with
                          it): 32 random bytes, written by the first node to find
                          none
========================  =========================================================

One Lua script per publish (``scripts.PUBLISH``) creates the room's epoch if it is
missing, takes the next seq, keeps the message in the room's history when the room
has one (the bounds are the publishing node's ``Node.history_bounds`` when it
queues the message), and ``PUBLISH``\\ es the message, its position written in, to
the room's channel; it returns the position, how many subscribers (nodes: each has
one subscription) received it, and whether it was kept. Positions are therefore
decided once, in Redis, for every node, and a message is never numbered without
being kept, nor kept without being numbered. The same script trims the history to
its bounds: the oldest entries go while there are more than the count or their
sizes (the bytes of their tails: room, event, data, sender, delivery, key and
publish id, in msgpack) add up to more than the bytes, and entries older than the
age go too; the stream expires with its age. A message that carries its session's
publish id, in a room with history, is checked first against the publish ids the
history holds: a repeat is numbered, kept and sent no more, and answers with the
first one's position (``Published.repeat``). :meth:`RedisAdapter.history` reads the
history in one script too, with the position, so that what it returns is of one
moment. When a room's epoch is created (first use, or Redis lost the position),
whatever history is left is deleted in the same step: an old epoch's messages are
never served as a new one's. :meth:`RedisAdapter.subscribe` and
:meth:`~RedisAdapter.position` run a third script that creates the epoch if it is
missing, so that a room with no message yet has a position too.

A node subscribes to the channels of the rooms it has members in: on its first
member (:meth:`~RedisAdapter.subscribe` returns once Redis confirmed the
subscription), and ``linger`` seconds after its last member left, so that members
coming and going cost no churn. This uses plain ``PUBLISH``/``SUBSCRIBE``, whose
receiver count is exact on a standalone Redis. (On a Redis Cluster it is not:
that needs sharded pub/sub, ``SPUBLISH``/``SSUBSCRIBE``, with one subscription
per shard; the layout is ready for it, the adapter does not do it yet.)

Messages between nodes are msgpack arrays that start with a version number,
``[1, kind, ...]``. A message that this version cannot read (a newer version, an
unknown kind, a malformed one) is counted (``undecodable``) and logged, at most a
line every 10 seconds, never a crash.

What you can rely on
--------------------
* **Order.** :meth:`~RedisAdapter.publish_nowait`, :meth:`~RedisAdapter.publish`,
  :meth:`~RedisAdapter.signal` and :meth:`~RedisAdapter.signal_nowait` go through
  one ordered queue of ``queue_size`` messages, sent in pipelines by one task: the
  messages of one node reach Redis, and so every node, in the order it sent them.
* **Unavailable.** Over that bound, or while the adapter is not connected, the
  calls raise :exc:`eventbus.Unavailable` at once, and the message is counted as
  lost (``lost_sent``). Nothing is buffered for later.
* **Outages.** When Redis goes away the adapter says so once in the log, turns
  ``DISCONNECTED``, and reconnects by itself with backoff (``backoff``, from 0.1 s
  up to 5 s, with jitter), resubscribing to every room and restoring this node's
  presence. The node keeps serving; only what crosses Redis fails. What was
  queued when the connection broke is lost (``lost_sent``); what was on the wire
  may or may not have been delivered (``unconfirmed``). A Redis restarted without
  persistence starts new epochs for every room.
* **Repair on the receiving side.** Each node remembers the last position it
  handed over per room, and hands a room's messages in seq order, once each. When
  it finds it missed some (a jump in seqs; after a resubscription or a
  reconnection, the distance to the room's position; messages dropped because
  this node's inbox, ``inbox_size``, between Redis and the node, was full), it
  reads them from the room's history, in pages, and hands them over before
  anything later (``repaired``): a Redis blip is invisible to clients. What
  history no longer holds (trimmed, or the room keeps none, or Redis could not be
  read) is counted in ``lost_received`` and reported to the node
  (``Node.lost``: the room's members get a GAP). When a room's epoch changed
  meanwhile (Redis lost its data), the new epoch is repaired from its start (seq
  1), but how many of the old epoch's last messages this node missed cannot be
  known: ``epochs_lost`` counts those rooms.
* **Broken and deaf subscriptions.** A subscription that breaks while commands
  still work (Redis closed it, say for its output-buffer limit) is made again at
  once (``resubscriptions``), and what this node missed meanwhile is repaired (or
  counted); the node stays ``CONNECTED``, its outgoing messages unaffected. When no
  message has arrived for ``probe_interval`` seconds (5 s), the adapter publishes a
  probe to its own node's channel; if Redis counts no subscriber there, or the
  probe does not come back within ``probe_timeout`` (2 s), the subscription is
  deaf and is made again the same way (``deaf_repairs``): within about 7 s at the
  defaults.
* **One secret.** At each connection the adapter writes its secret to
  ``P:secret`` unless one is there, and reads it back
  (:meth:`~RedisAdapter.shared_secret`): every node signs resume tokens with the
  same one, and after Redis restarted empty the first node back restores it.
* **Presence after a crash.** A node refreshes its liveness key every
  ``refresh_interval`` seconds (3 s); :meth:`~RedisAdapter.members` leaves out,
  and removes, the members of nodes whose key expired. So the members of a node
  that died without saying goodbye (SIGKILL, a lost machine) disappear from
  :meth:`~RedisAdapter.members` within ``liveness_ttl`` seconds (10 s) of its
  death. A node that stops normally removes its members at once.
"""

# The modules, one concept each:
#   wire        the messages between nodes (versioned msgpack), encoded and decoded
#   keys        the names of keys and channels (prefix, hash tags)
#   scripts     the Lua scripts that run in Redis
#   history     rooms' histories: their bounds as the scripts take them, read back
#   session     one connection to Redis, and what ends it
#   outgoing    the ordered queue of messages to other nodes, sent in pipelines
#   rooms       this node's rooms: wanted, lingering, where the node stands in them
#   subscriber  the subscription (kept, repaired, probed) and the inbox it fills
#   handover    the inbox to the node, in order, with what it missed from history
#   presence    this node's members in Redis, and its liveness key
#   logs        the adapter's logger, and its budgets of log lines
#   adapter     RedisAdapter: reconnecting, and the Adapter API over the others

from .adapter import RedisAdapter

__all__ = ["RedisAdapter"]
