"""One client connection: its reader, its send path, its requests and calls.

The send path is the hot path of every broadcast. A frame is written straight
to the non-blocking socket from whoever sends it (no task switch); only what the
kernel will not take waits in the connection's :class:`~.outbox.Outbox`, and a
writer task is started then, and ends when the queue is empty. So an idle
connection costs one task (its reader), and a busy one at most three (reader,
writer, and the worker that runs its handlers in order).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)

from ..codes import CloseCode, ErrorCode
from ..errors import (
    CallTimeout,
    ConnectionClosed,
    LocalProtocolError,
    RateLimited,
    RemoteProtocolError,
    RequestError,
    TooManyPending,
    error_from_code,
)
from ..protocol import (
    Ack,
    Codec,
    ErrorReply,
    Event,
    Gap,
    Packet,
    Welcome,
    check_name,
)
from ..protocol.wsframe import server_frame
from .http import HandshakeRequest
from .logs import LogBudget, may_log, quote
from .meter import FRAME_COST, PING_COST, Meter
from .outbox import Delivery, Outbox

if TYPE_CHECKING:
    from .app import EventBus

__all__ = ["Connection", "Disconnect"]

logger = logging.getLogger("eventbus.server")

_RECEIVE = 65_536
_WRITE_BATCH = 262_144
_ACK_ID_MAX = 2**31 - 1
# Packets that may wait for the handlers beyond max_pending (those without ack ids).
_INBOX_SLACK = 256
# What a waiting request is counted as against inbox_bytes: its size on the wire,
# plus this much per data value it decoded into (a Python object and the slot that
# holds it: an empty dict, the largest, takes 72 bytes), plus a fixed overhead.
_VALUE_BYTES = 80
_ENTRY_BYTES = 256
# Refusals in a row (at least; else ``burst``) after which a client that ignores
# them is closed with 4000.
_MIN_REFUSALS = 100
# Closes for what a client did wrong: its address gets no burst on its next
# connections for a while (see EventBus._penalize).
_ABUSE_CODES = frozenset({CloseCode.TOO_MANY_ERRORS, CloseCode.PROTOCOL_ERROR,
                          CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG})
_PENALIZED_BURST = 10
# What a closing connection may still send to be read and discarded (beyond it, the
# server closes with the rest unread).
_LINGER_BYTES = 1_048_576
# The reader yields to other connections after this many parsed frames, so that a
# read full of tiny frames cannot hold the event loop.
_FRAMES_PER_YIELD = 64
# Log lines a client's actions may cause per connection, at most, and how much of
# what it sent a line may quote.
_LOG_BURST = 20
_LOG_PER_SECOND = 0.2
# Packet types a client sends as answers to the server's calls.
_REPLY_TYPES = frozenset({7, 8})
# Close reasons in our words for the framing errors wsproto reports (its own text
# quotes Python's exception messages about the client's bytes).
_FRAMING_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "WebSocket framing error",
    CloseCode.INVALID_DATA: "text frame is not valid UTF-8",
    CloseCode.MESSAGE_TOO_BIG: "frame larger than the server accepts",
}


@attrs.frozen
class Disconnect:
    """Why a connection ended, as given to ``on_disconnect``.

    Attributes:
        code: The WebSocket close code (1006 when the TCP connection just ended).
        reason: Text for humans.
        by_server: Whether the server ended it (else the client or the network).
    """

    code: int
    reason: str
    by_server: bool


class _PendingCall:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Connection:
    """A client connected to the bus; handlers receive it as ``sock``.

    Attributes:
        sid: The connection's public id (sent to the client in its welcome): an
            address for the app, on any node.
        session: The session the connection belongs to: its own sid, or the
            session of the connection it resumed (PROTOCOL.md section 9.1).
        state: What the ``authenticate`` hook returned (an empty dict without a hook).
        request: The handshake request the connection was opened with.
    """

    __slots__ = (
        "_bus",
        "_calls",
        "_client_acks",
        "_closing",
        "_codec",
        "_counts_in",
        "_counts_out",
        "_direct_fd",
        "_drained",
        "_errors",
        "_flushed",
        "_fragments",
        "_fragments_size",
        "_inbox",
        "_inbox_bytes",
        "_inbox_limit",
        "_log_budget",
        "_lot",
        "_meter",
        "_nursery",
        "_outbox",
        "_read_scope",
        "_refusals",
        "_scope",
        "_worker",
        "_writing",
        "_ws",
        "closed",
        "disconnect",
        "limiters",
        "next_call_id",
        "next_ping",
        "ping_deadline",
        "request",
        "requests",
        "resume_token",
        "rooms",
        "session",
        "sid",
        "state",
        "stream",
        "token_refresh",
    )

    def __init__(
        self, bus: EventBus, stream: trio.abc.Stream, ws: WSConnection, codec: Codec,
        request: HandshakeRequest, state: Any,
    ) -> None:
        config = bus.config
        self._bus = bus
        self.stream = stream
        self._ws = ws
        self._codec = codec
        self.request = request
        self.state = state
        self.sid = bus._router.new_sid()
        # Broadcast-except-sender skips every connection of the sender's session.
        self.session = self.sid
        self.resume_token = bus._recovery.issue(self)
        #: When the connection gets a fresh resume token (trio time).
        self.token_refresh = trio.current_time() + config.resume_ttl / 2
        #: Requests handed to the dispatcher so far (RESUME must be the first).
        self.requests = 0
        #: Rooms this connection is a member of.
        self.rooms: set[str] = set()
        # Plain TCP sockets are written directly; TLS and in-memory streams go
        # through their writer task.
        self._direct_fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # Made on first use: most connections never fill their socket buffer, and
        # an idle connection should cost as little memory as possible.
        self._outbox: Outbox | None = None
        self._writing = False
        self._flushed: trio.Event | None = None
        self._drained: trio.Event | None = None
        # Requests waiting for the worker, with what each counts against inbox_bytes.
        self._inbox: deque[tuple[Packet, int]] | None = None
        self._inbox_bytes = 0
        self._inbox_limit = config.max_pending + _INBOX_SLACK
        self._worker = False
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._client_acks: set[int] = set()
        #: Bounds of this connection's concurrent handlers, by event.
        self.limiters: dict[str, trio.CapacityLimiter] = {}
        self._calls: dict[int, _PendingCall] = {}
        self.next_call_id = 1
        # A client just closed for abuse, back under a new connection, gets almost no
        # burst (a little: others behind the same address, a NAT, must still get in).
        now = trio.current_time()
        self._meter = Meter(
            config.rate, config.burst,
            float(min(config.burst, _PENALIZED_BURST) if bus._handshakes.penalized(
                request.remote) else config.burst),
            config.receive_rate, config.max_frame + _RECEIVE, now)
        self._errors = 0
        self._refusals = 0
        self._log_budget = LogBudget(_LOG_BURST, _LOG_PER_SECOND, now)
        # This codec's packet counters of the bus (None: metrics off), held here so
        # that counting a packet costs one dict update.
        metrics = bus.metrics
        self._counts_in = metrics.received[codec.name] if metrics is not None else None
        self._counts_out = metrics.sent[codec.name] if metrics is not None else None
        self._fragments: list[str | bytes] = []
        self._fragments_size = 0
        self._closing = False
        self.closed = False
        self.disconnect: Disconnect | None = None
        self._scope: trio.CancelScope | None = None
        self._read_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        now = trio.current_time()
        self.next_ping = now + config.ping_interval
        self.ping_deadline: float | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.sid} {self._codec.name} rooms={sorted(self.rooms)}>"

    @property
    def open(self) -> bool:
        """Whether what is sent now still reaches the client (not closed, nor
        closing)."""
        return not (self.closed or self._closing)

    @property
    def codec(self) -> Codec:
        """The connection's codec (JSON or msgpack)."""
        return self._codec

    @property
    def binary(self) -> bool:
        """Whether the connection speaks msgpack in binary frames (else JSON)."""
        return self._codec.binary

    # --- the app's API ------------------------------------------------------------

    def join(self, room: str) -> None:
        """Add this connection to a room (no authorization: this is server code)."""
        check_name(room, "room", self._bus.config.max_name, reserved_ok=True)
        if not self.closed:
            self._bus._router.join_nowait(self, room)

    def leave(self, room: str) -> None:
        """Remove this connection from a room; leaving a room it is not in is fine."""
        self._bus._router.leave(self, room)

    def emit(
        self, event: str, data: Any = None, *, delivery: Delivery | str = Delivery.RELIABLE,
        key: str | None = None,
    ) -> None:
        """Send an event to this connection alone.

        Raises:
            LocalProtocolError: the data cannot be encoded for this connection's codec.
        """
        check_name(event, "event", self._bus.config.max_name, reserved_ok=True)
        if self.closed:
            return
        frame = self.frame(Event(event, data))
        self.send_frame(frame, Delivery(delivery), None, key)

    def broadcast(
        self, event: str, data: Any = None, *, to: str,
        delivery: Delivery | str = Delivery.RELIABLE,
        key: str | None = None,
    ) -> int:
        """Send an event to every member of room ``to`` except this connection.

        Returns:
            How many connections it was sent to.
        """
        return self._bus._emit_room(event, data, to, self, Delivery(delivery), key)

    async def call(self, event: str, data: Any = None, *, timeout: float | None = None) -> Any:
        """Ask the client for an answer: send an event with an ack id and wait.

        Returns:
            The data of the client's ack.

        Raises:
            CallTimeout: no answer within ``timeout`` (default: the bus's call_timeout).
            RequestError: the client answered with an error (the subclass of its code).
            ConnectionClosed: the connection closed before the answer came.
            TooManyPending: too many calls to this connection await an answer.
        """
        check_name(event, "event", self._bus.config.max_name, reserved_ok=True)
        if self.closed:
            raise ConnectionClosed(f"connection {self.sid} is closed")
        if len(self._calls) >= self._bus.config.max_calls:
            raise TooManyPending(f"{len(self._calls)} calls to {self.sid} await an answer")
        ack_id = self._allocate_call_id()
        pending = self._calls[ack_id] = _PendingCall()
        try:
            self.send_frame(self.frame(Event(event, data, ack_id)), Delivery.RELIABLE, None, None)
            limit = self._bus.config.call_timeout if timeout is None else timeout
            with trio.move_on_after(limit):
                await pending.done.wait()
        finally:
            self._calls.pop(ack_id, None)
        metrics = self._bus.metrics
        if not pending.done.is_set():
            if metrics is not None:
                metrics.calls["timeout"] += 1
            raise CallTimeout(f"{self.sid} did not answer {event!r} within {limit} s")
        if pending.error is not None:
            if metrics is not None:
                metrics.calls["closed" if isinstance(pending.error, ConnectionClosed)
                              else "error"] += 1
            raise pending.error
        if metrics is not None:
            metrics.calls["answered"] += 1
        return pending.value

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the connection ends when the client answers
        it or after ``close_timeout``."""
        if self._closing or self.closed:
            return
        self._closing = True
        # A close frame's reason must fit in 123 UTF-8 bytes.
        reason = reason.encode()[:123].decode("utf-8", "ignore")
        self._record(code, reason, by_server=True)
        if self._ws.state is ConnectionState.OPEN:
            self._send_control(self._ws.send(CloseConnection(code=code, reason=reason)))
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, trio.current_time() + self._bus.config.close_timeout
            )

    def statistics(self) -> dict[str, int]:
        """Queue and request counters, for monitoring."""
        box = self._outbox
        return {
            "queued_messages": len(box) if box is not None else 0,
            "queued_bytes": box.bytes if box is not None else 0,
            "dropped": box.dropped if box is not None else 0,
            "pending_requests": len(self._client_acks),
            "pending_calls": len(self._calls),
        }

    # --- sending ------------------------------------------------------------------

    def frame(self, packet: Packet) -> bytes:
        """Encode a packet for this connection and frame it."""
        frame = server_frame(self._codec.encode(packet), binary=self._codec.binary)
        if self._counts_out is not None:
            self._counts_out[type(packet)] += 1
        return frame

    def send_frame(
        self, frame: bytes, delivery: Delivery, room: str | None, key: str | None
    ) -> None:
        """Send a frame now if the socket takes it, else queue it under its policy.

        Never blocks and never raises: a connection that cannot keep up with a
        reliable message is closed with 4001 instead.
        """
        if self.closed or self._closing or self._write_now(frame):
            return
        box = self._box()
        if not box.push(frame, delivery, room, key):
            self._abort(
                CloseCode.SLOW_CONSUMER,
                f"outbound queue full ({len(box)} messages, {box.bytes} bytes)",
            )
            return
        self._start_writer()

    async def send_paced(self, frame: bytes, room: str) -> bool:
        """Send a frame of a replay: at the pace the client reads, so that however
        long a replay is it never fills the queue (and never closes a client that
        reads with 4001). Whether the connection is still open."""
        box = self._outbox
        while box is not None and (len(box) * 2 >= box.max_messages
                                   or box.bytes * 2 >= box.max_bytes):
            if not self.open:
                return False
            self._drained = trio.Event()
            await self._drained.wait()
        if not self.open:
            return False
        self.send_frame(frame, Delivery.RELIABLE, room, None)
        return self.open

    def _send_control(self, data: bytes) -> None:
        if not self._write_now(data):
            self._box().push_control(data)
            self._start_writer()

    def _write_now(self, data: bytes) -> bool:
        """Write ``data`` straight to the socket when nothing waits before it; what
        the kernel refuses is queued first in line. False when it must be queued."""
        box = self._outbox
        if self._writing or (box is not None and not box.idle) or self._direct_fd < 0:
            return False
        try:
            sent = os.write(self._direct_fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._abort(1006, "connection lost", by_server=False)
            return True
        if sent < len(data):
            # Partly on the wire: the rest must follow, whatever the policy.
            self._box().push_control(data[sent:])
            self._start_writer()
        return True

    def _box(self) -> Outbox:
        box = self._outbox
        if box is None:
            config = self._bus.config
            box = self._outbox = Outbox(
                config.send_queue_size, config.send_queue_bytes, self._gap_frame)
        return box

    def _gap_frame(self, room: str | None, count: int) -> bytes:
        return self.frame(Gap(room, count))

    def _start_writer(self) -> None:
        if self._writing or self.closed or self._nursery is None:
            return
        try:
            self._nursery.start_soon(self._writer)
        except RuntimeError:  # the nursery is closing: the connection is ending
            return
        self._writing = True

    async def _writer(self) -> None:
        stream = self.stream
        fd = self._direct_fd
        try:
            box = self._box()
            while len(box) or box.gaps:
                data = box.take(_WRITE_BATCH)
                if fd < 0:
                    await stream.send_all(data)
                    continue
                view = memoryview(data)
                while view:
                    try:
                        sent = os.write(fd, view)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
                        continue
                    view = view[sent:]
                if self._drained is not None and len(box) * 4 < box.max_messages:
                    self._drained.set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self._abort(1006, "connection lost", by_server=False)
        finally:
            self._writing = False
            if self._flushed is not None:
                self._flushed.set()
            if self._drained is not None:
                self._drained.set()

    # --- receiving ----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; clean up whatever happened."""
        bus = self._bus
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.send_frame(
                        self.frame(Welcome(self.sid, self.resume_token, bus.welcome_options)),
                        Delivery.RELIABLE, None, None,
                    )
                    bus._connected(self)
                    if bus._on_connect is not None:
                        # The hook runs in the worker, before any request, while the
                        # reader already reads (the hook may call the client).
                        self._worker = True
                        self._inbox = deque()
                        nursery.start_soon(self._work, bus._run_on_connect)
                    with trio.CancelScope() as self._read_scope:
                        await self._read_loop()
                    self.closed = True
                    with trio.move_on_after(bus.config.close_timeout):
                        if self._writing:
                            # Let the writer send what is queued (the reply to the
                            # client's close frame, above all) before tearing down.
                            self._flushed = trio.Event()
                            await self._flushed.wait()
                        if self._ws.state is ConnectionState.LOCAL_CLOSING:
                            await self._linger()
                    nursery.cancel_scope.cancel()
        finally:
            await self._cleanup()

    async def _linger(self) -> None:
        """After the server's close frame: end our side, then read and discard what
        the client still sends until it ends its side (or ``close_timeout``).

        Closing a socket with unread input makes the kernel reset the connection,
        and a reset can destroy what was sent just before it (the errors that
        explain the close, and the close frame with its code) before the client
        reads them: the client would see 1006 and reconnect, instead of the code.
        """
        stream = self.stream
        rate = self._bus.config.receive_rate
        discarded = 0
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            # Paced like any read, and bounded: a client that floods on after the
            # close must not keep the server reading at full speed.
            while discarded < _LINGER_BYTES and (data := await stream.receive_some(_RECEIVE)):
                discarded += len(data)
                if rate:
                    await self._pace(len(data))

    async def _read_loop(self) -> None:
        ws = self._ws
        stream = self.stream
        fd = self._direct_fd
        receive_rate = self._bus.config.receive_rate
        # Bytes that arrived with the handshake are already in wsproto.
        if self.closed or not await self._handle_events(ws):
            return
        while True:
            data: bytes | bytearray
            try:
                if fd >= 0:
                    # Wait first, then read: in request/response traffic the socket
                    # is usually empty right after an answer, so trying a read first
                    # would cost a failed system call per message.
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        data = os.read(fd, _RECEIVE)
                    except BlockingIOError:
                        continue
                else:
                    data = await stream.receive_some(_RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self._record(1006, "connection lost", by_server=False)
                return
            # Any bytes from the client prove it alive, as a pong would
            # (PROTOCOL.md section 11: a client busy sending is not dead).
            self.ping_deadline = None
            ws.receive_data(bytes(data))
            if not await self._handle_events(ws):
                return
            if receive_rate:
                await self._pace(len(data))

    async def _pace(self, received: int) -> None:
        """Hold the next read while this connection is over ``receive_rate``.

        Parsing costs CPU per byte before any packet can be refused, so bytes are
        metered where they are cheapest to stop: not reading lets TCP push back on
        the client, at no cost to the server or to other connections.
        """
        delay = self._meter.received(received, trio.current_time())
        if delay > 0:
            await trio.sleep(delay)

    async def _handle_events(self, ws: WSConnection) -> bool:
        """Process what wsproto parsed; False once the connection must end."""
        meter = self._meter
        metered = meter.metered
        for parsed, event in enumerate(ws.events(), 1):
            if parsed % _FRAMES_PER_YIELD == 0:
                # wsproto parses lazily, so this also bounds the parsing done at once.
                await trio.lowlevel.checkpoint()
                if self.closed:
                    return False
            if metered and not (
                    isinstance(event, Ping)
                    or (isinstance(event, Message) and event.message_finished)):
                # A message in one frame costs its one token; its further pieces,
                # and control frames but pings (charged below), cost a fraction.
                meter.charge(FRAME_COST)
            if isinstance(event, Message):
                if not self._on_message(event):
                    return False
            elif isinstance(event, Ping):
                if metered and not meter.take(PING_COST, trio.current_time()):
                    # Unanswered: a ping flood must not cost a write per ping.
                    if not self._refused():
                        return False
                elif ws.state is ConnectionState.OPEN:
                    # Queued like any reliable message, so a client that pings and
                    # never reads fills its queue and is closed, not the server.
                    self.send_frame(ws.send(event.response()), Delivery.RELIABLE, None, None)
            elif isinstance(event, CloseConnection):
                return self._on_close(ws, event)
            # Pongs need nothing more: receiving any bytes already reset the deadline.
            if self.closed:
                return False
        return True

    def _on_close(self, ws: WSConnection, event: CloseConnection) -> bool:
        if ws.state is ConnectionState.OPEN:
            # wsproto reports a framing violation as a close event without closing;
            # its reason is Python's wording about the bytes, so we give our own.
            self._abort(event.code, _FRAMING_REASONS.get(event.code, "WebSocket framing error"))
            return False
        if ws.state is ConnectionState.REMOTE_CLOSING:
            self._record(event.code, event.reason or "", by_server=False)
            self._send_control(ws.send(event.response()))
        return False

    def _on_message(self, event: Message[Any]) -> bool:
        data = event.data
        # max_frame counts bytes. wsproto hands text over decoded; a character is at
        # most 4 UTF-8 bytes, so only a long text needs measuring.
        length = len(data)
        if isinstance(data, str) and (
            not event.message_finished or self._fragments
            or length * 4 > self._bus.config.max_frame
        ):
            length = len(data.encode("utf-8", "surrogatepass"))
        size = self._fragments_size + length
        if size > self._bus.config.max_frame:
            self._abort(
                CloseCode.MESSAGE_TOO_BIG,
                f"message larger than {self._bus.config.max_frame} bytes",
            )
            return False
        if not event.message_finished:
            if len(self._fragments) >= self._bus.config.max_fragments:
                self._abort(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"message in more than {self._bus.config.max_fragments} frames",
                )
                return False
            self._fragments.append(event.data)
            self._fragments_size = size
            return True
        message: str | bytes
        if self._fragments:
            self._fragments.append(event.data)
            if isinstance(event, TextMessage):
                message = "".join(str(part) for part in self._fragments)
            else:
                message = b"".join(
                    part.encode() if isinstance(part, str) else part for part in self._fragments)
            self._fragments.clear()
            self._fragments_size = 0
        else:
            message = event.data if isinstance(event, TextMessage) else bytes(event.data)
        assert isinstance(event, TextMessage | BytesMessage)
        return self._on_packet_data(message)

    def _on_packet_data(self, message: str | bytes) -> bool:
        if self._closing:
            return True
        config = self._bus.config
        if config.rate and not self._meter.take(1.0, trio.current_time()):
            return self._refuse(message, RateLimited("rate limit exceeded; slow down"))
        inbox = self._inbox
        if inbox and not self._fits(len(message) + _ENTRY_BYTES):
            # The handlers are this far behind: refuse requests unread rather than
            # stop reading, so that answers to the server's own calls and pongs still
            # get through (those are told apart by the packet type, read cheaply).
            kind, _ = self._codec.peek(message)
            if kind not in _REPLY_TYPES:
                return self._refuse(message, TooManyPending(
                    f"{len(inbox)} requests ({self._inbox_bytes} bytes) already wait for"
                    " this connection's handlers"))
        try:
            packet = self._codec.decode(message)
        except RemoteProtocolError as exc:
            self._charge_values()
            return self._protocol_error(exc)
        values = self._charge_values()
        if self._counts_in is not None:
            self._counts_in[type(packet)] += 1
        if isinstance(packet, Ack | ErrorReply):
            self._accepted()
            self._on_reply(packet)
            return True
        ack_id = getattr(packet, "ack_id", None)
        if ack_id is not None and ack_id in self._client_acks:
            # Not answered with the id: the client would take it for the answer to
            # its first request with that id, which is still running.
            return self._protocol_error(RemoteProtocolError(
                f"ack id {ack_id} is already pending; request not processed",
                code=ErrorCode.INVALID_PACKET))
        cost = len(message) + values * _VALUE_BYTES + _ENTRY_BYTES
        if inbox and not self._fits(cost):
            # What it decoded into does not fit (or the peek above was fooled).
            self._reply_error(ack_id, TooManyPending(
                f"{len(inbox)} requests ({self._inbox_bytes} bytes) already wait for"
                " this connection's handlers"))
            return self._refused()
        self._accepted()
        if ack_id is not None:
            if len(self._client_acks) >= config.max_pending:
                self._reply_error(ack_id, TooManyPending(
                    f"{len(self._client_acks)} requests already await an answer"))
                return True
            self._client_acks.add(ack_id)
        if inbox is None:
            inbox = self._inbox = deque()
        self._inbox_bytes += cost
        inbox.append((packet, cost))
        self._wake_worker()
        return True

    def _fits(self, cost: int) -> bool:
        """Whether a request of ``cost`` may wait behind those already waiting."""
        return (len(self._inbox or ()) < self._inbox_limit
                and self._inbox_bytes + cost <= self._bus.config.inbox_bytes)

    def _charge_values(self) -> int:
        """Charge the rate limit for the data values just decoded; their number."""
        values = self._codec.elements
        self._meter.charge_values(values)
        return values

    def _wake_worker(self) -> None:
        if self._worker:
            # No lot yet: the worker has not started, and will find the work.
            if self._lot is not None:
                self._lot.unpark()
        elif self._nursery is not None:
            self._worker = True
            self._nursery.start_soon(self._work)

    def _refuse(self, message: str | bytes, error: RequestError) -> bool:
        """Answer a request with ``error`` without decoding it; False once the
        connection must end (too many refusals in a row)."""
        _, ack_id = self._codec.peek(message)
        if ack_id in self._client_acks:
            ack_id = None  # that id names a request still running: do not answer it
        self._reply_error(ack_id, error)
        metrics = self._bus.metrics
        if metrics is not None:
            metrics.refusals[error.code] += 1
        return self._refused()

    def _refused(self) -> bool:
        """Count a refusal (a packet or ping over the rate, or a request with the
        inbox full); a client that goes on regardless is closed with 4000."""
        self._refusals += 1
        if self._refusals >= max(self._bus.config.burst, _MIN_REFUSALS):
            self._abort(CloseCode.TOO_MANY_ERRORS,
                        f"{self._refusals} packets refused in a row (rate limit or full queue)")
            return False
        return True

    def _accepted(self) -> None:
        self._errors = 0
        self._refusals = 0

    def _may_log(self) -> bool:
        """Whether a log line caused by this client may be written now: a client
        must not be able to fill the server's log, whatever it sends (nor all
        clients together: the bus has a budget of its own)."""
        return may_log(trio.current_time(), self._log_budget, self._bus._client_log_budget)

    def _protocol_error(self, exc: RemoteProtocolError) -> bool:
        self._errors += 1
        self._reply_error(exc.ack_id, exc)
        if self._errors >= self._bus.config.max_errors:
            self._abort(CloseCode.TOO_MANY_ERRORS, f"{self._errors} protocol errors in a row")
            return False
        return True

    def _on_reply(self, packet: Ack | ErrorReply) -> None:
        if packet.ack_id is None:
            if self._may_log():
                assert isinstance(packet, ErrorReply)  # an ACK always has an ack id
                logger.info("client %s reported an error: [%s] %s", self.sid,
                            quote(packet.code), quote(packet.message))
            return
        pending = self._calls.get(packet.ack_id)
        if pending is None:
            return  # a late answer to a call that timed out: ignored by design
        if isinstance(packet, Ack):
            pending.value = packet.data
        else:
            pending.error = error_from_code(packet.code, packet.message)
        pending.done.set()

    # --- running requests in order --------------------------------------------------

    async def _work(
        self, first: Callable[[Connection], Awaitable[None]] | None = None
    ) -> None:
        inbox = self._inbox
        assert inbox is not None
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        lot = self._lot
        try:
            if first is not None:
                await first(self)
            while True:
                while inbox:
                    packet, cost = inbox.popleft()
                    self._inbox_bytes -= cost
                    await self._bus._dispatcher.dispatch(self, packet)
                # Once started, the worker stays for the connection's life: the next
                # request costs a wakeup, not a new task and a timer.
                await lot.park()
        finally:
            self._worker = False

    def answer(self, ack_id: int | None, value: Any) -> None:
        """Send the answer to a client request (nothing if it asked for none)."""
        if ack_id is None:
            return
        self._client_acks.discard(ack_id)
        try:
            frame = self.frame(Ack(ack_id, value))
        except LocalProtocolError as exc:
            logger.warning("answer to request %d of %s cannot be encoded: %s",
                           ack_id, self.sid, exc.message)
            frame = self.frame(ErrorReply(ack_id, exc.code, exc.message))
        self.send_frame(frame, Delivery.RELIABLE, None, None)

    def answer_error(self, ack_id: int | None, error: RequestError) -> None:
        """Send an error about a client request (with ack id null if it had none)."""
        if ack_id is not None:
            self._client_acks.discard(ack_id)
        self._reply_error(ack_id, error)

    def _reply_error(self, ack_id: int | None, error: RequestError) -> None:
        message = error.message[:1024]
        self.send_frame(
            self.frame(ErrorReply(ack_id, error.code, message)), Delivery.RELIABLE, None, None
        )

    def _allocate_call_id(self) -> int:
        ack_id = self.next_call_id
        while ack_id in self._calls:
            ack_id = ack_id % _ACK_ID_MAX + 1
        self.next_call_id = ack_id % _ACK_ID_MAX + 1
        return ack_id

    # --- ending ------------------------------------------------------------------------

    def _record(self, code: int, reason: str, *, by_server: bool) -> None:
        if self.disconnect is None:
            self.disconnect = Disconnect(code, reason, by_server)

    def _abort(self, code: int, reason: str, *, by_server: bool = True) -> None:
        """End the connection from any context: stop reading, send a close frame
        after what is queued (or instead of it, for a slow consumer), and let the
        connection's task drop the TCP connection within ``close_timeout``."""
        if self.closed:
            return
        self._record(code, reason, by_server=by_server)
        if by_server and code in _ABUSE_CODES:
            self._bus._handshakes.penalize(self.request.remote)
        self._closing = True
        box = self._outbox
        # A peer that does not read (slow consumer) or does not answer (heartbeat)
        # gets its close frame only if the socket takes it at once; one that is
        # merely misbehaving gets what is queued, then the close frame.
        unresponsive = code in (CloseCode.SLOW_CONSUMER, CloseCode.HEARTBEAT_TIMEOUT)
        if (unresponsive or not by_server) and box is not None:
            box.clear()
        if by_server and self._ws.state is ConnectionState.OPEN:
            short = reason.encode()[:123].decode("utf-8", "ignore")
            frame = self._ws.send(CloseConnection(code=code, reason=short))
            if not unresponsive:
                self._send_control(frame)
            elif not self._writing and self._direct_fd >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._direct_fd, frame)
        self.closed = True
        if unresponsive or not by_server:
            if self._scope is not None:
                self._scope.cancel()
        elif self._read_scope is not None:
            self._read_scope.cancel()

    async def _cleanup(self) -> None:
        self.closed = True
        self._record(1006, "connection lost", by_server=False)
        error = ConnectionClosed(
            f"connection {self.sid} closed",
            close_code=self.disconnect.code if self.disconnect else None,
        )
        for pending in self._calls.values():
            pending.error = error
            pending.done.set()
        if self._drained is not None:
            self._drained.set()
        if self._outbox is not None:
            self._outbox.clear()
        self._bus._detach(self)
        # The socket closes before the hook runs, so that a slow hook holds nothing.
        await self._close_stream()
        await self._bus._run_on_disconnect(self)

    async def _close_stream(self) -> None:
        # A TLS close_notify may wait on a peer that is gone: give it a second.
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1.0) as scope:
                await self.stream.aclose()
            if scope.cancelled_caught:
                await trio.aclose_forcefully(self.stream)
