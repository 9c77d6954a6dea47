"""The bus inside an asyncio program: trio runs in guest mode on the asyncio loop.

``async with run_bus(bus) as running:`` starts a trio run on the running asyncio
loop (:func:`trio.lowlevel.start_guest_run`): trio's scheduler runs as callbacks of
the asyncio loop, in the same thread, and only its I/O wait moves to a worker
thread. The bus serves there, as under ``trio.run``.

The two loops meet in two places only, so that neither ever runs the other's code
in the middle of its own:

- asyncio to trio: every :class:`EmbeddedBus` method hands its work to trio with
  :meth:`trio.lowlevel.TrioToken.run_sync_soon`, to run between two trio steps (an
  async one in a trio task of its own, in the embedding's nursery);
- trio to asyncio: answers and exceptions come back with
  ``loop.call_soon_threadsafe``, which settles the future the asyncio task awaits.

The embedding's structure, in trio::

    guest run
    └── cancel scope (a hard stop cancels it)
        └── nursery
            ├── bus.serve(host, port, ...)   (its return cancels the nursery)
            └── one task per request from asyncio (publish, call, ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, TypeVarTuple, Unpack

import outcome
import trio

from ..adapters import Member, Published
from ..errors import Unavailable
from ..protocol import Position
from ..server import CallResults, Connection, Delivery, EventBus

__all__ = ["EmbeddedBus", "run_bus"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class EmbeddedBus:
    """A running bus, seen from asyncio: what ``async with run_bus(bus) as running``
    gives.

    Call its methods from asyncio tasks of the loop that runs the bus. Each one runs
    the matching :class:`~eventbus.EventBus` method in trio and returns (or raises)
    what it did; even the bus's plain methods (``emit``, ``statistics``, ...) are
    coroutines here, since their answer can only come back once trio has run them.
    Cancelling the asyncio task that awaits one that waits in trio (``publish``,
    ``call``, ``all_members``, :meth:`run`) cancels the trio task doing its work, and
    the method raises ``CancelledError`` once that task has ended; a plain one
    (``emit``, ``statistics``, :meth:`run_sync`, ...) runs to its end at trio's next
    step either way.

    Once the ``run_bus`` block has ended (or the bus stopped by itself), every
    method raises :exc:`RuntimeError`. A request that the bus's stop cuts short
    raises :class:`~eventbus.Unavailable`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, bus: EventBus) -> None:
        self._loop = loop
        self._bus = bus
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._port: int | None = None
        self._url = ""

    @property
    def port(self) -> int:
        """The port the bus listens on (the one picked, with ``port=0``; with
        several listeners, the first one's)."""
        assert self._port is not None, "the bus is not listening yet"
        return self._port

    @property
    def url(self) -> str:
        """The bus's URL for clients, ``ws://host:port/`` (``wss://`` with an
        ``ssl_context``), with the host ``run_bus`` was given."""
        return self._url

    # --- the bus's methods ------------------------------------------------------------

    async def emit(
        self, event: str, data: Any = None, *, to: str | Connection | None = None,
        to_room: str | None = None, to_sid: str | None = None,
        skip: Connection | None = None, delivery: Delivery | str = Delivery.RELIABLE,
        key: str | None = None,
    ) -> int:
        """:meth:`EventBus.emit <eventbus.EventBus.emit>`: send an event without
        waiting for anyone; returns how many connections it was handed to."""
        emit = functools.partial(self._bus.emit, event, data, to=to, to_room=to_room,
                                 to_sid=to_sid, skip=skip, delivery=delivery, key=key)
        return await self.run_sync(emit)

    async def publish(
        self, room: str, event: str, data: Any = None, *, skip: Connection | None = None,
        delivery: Delivery | str = Delivery.RELIABLE, key: str | None = None,
    ) -> Published:
        """:meth:`EventBus.publish <eventbus.EventBus.publish>`: send an event to a
        room on every node, and wait until it is numbered."""
        publish = functools.partial(self._bus.publish, room, event, data, skip=skip,
                                    delivery=delivery, key=key)
        return await self.run(publish)

    async def call(
        self, event: str, data: Any = None, *, to: str | Connection | None = None,
        to_room: str | None = None, to_sid: str | None = None,
        timeout: float | None = None,
    ) -> CallResults:
        """:meth:`EventBus.call <eventbus.EventBus.call>`: ask every member of a room
        (or one connection) for an answer, and collect the answers."""
        call = functools.partial(self._bus.call, event, data, to=to, to_room=to_room,
                                 to_sid=to_sid, timeout=timeout)
        return await self.run(call)

    async def members(self, room: str) -> list[Member]:
        """The connections of this node in a room, in the order they joined (as
        :class:`~eventbus.adapters.Member` values: the connections themselves belong
        to trio)."""
        return await self.run_sync(self._members, room)

    def _members(self, room: str) -> list[Member]:
        node = self._bus.node_id
        return [Member(conn.sid, node) for conn in self._bus.members(room)]

    async def all_members(self, room: str) -> list[Member]:
        """:meth:`EventBus.all_members <eventbus.EventBus.all_members>`: every
        connection in a room, on every node."""
        return await self.run(self._bus.all_members, room)

    async def position(self, room: str) -> Position | None:
        """:meth:`EventBus.position <eventbus.EventBus.position>`: the last position of
        a room this node has seen, or ``None``."""
        return await self.run_sync(self._bus.position, room)

    async def statistics(self) -> dict[str, int | str]:
        """:meth:`EventBus.statistics <eventbus.EventBus.statistics>`: the bus's
        counters."""
        return await self.run_sync(self._bus.statistics)

    async def health(self) -> tuple[int, dict[str, Any]]:
        """:meth:`EventBus.health <eventbus.EventBus.health>`: what ``GET /health``
        answers, as ``(status, body)``."""
        return await self.run_sync(self._bus.health)

    # --- anything else, in trio -------------------------------------------------------

    async def run_sync(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Call ``fn(*args)`` in trio, between two of its steps, and return what it
        returns (or raise what it raises): for a plain function that touches the bus
        or anything else of trio's (``bus.connections[sid].close(...)``, say).

        Raises:
            RuntimeError: the bus has stopped.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        self._submit(self._call_sync, future, fn, args)
        # A plain function cannot be interrupted: a cancelled caller stops waiting
        # for it, but it runs to its end at trio's next step either way.
        return await future

    async def run(self, async_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """Run ``await async_fn(*args)`` in a trio task of its own and return what it
        returns (or raise what it raises): for trio code the other methods do not
        cover (``await bus.connections[sid].call(...)``, say).

        Cancelling the asyncio task that awaits this cancels the trio task; this then
        raises ``CancelledError`` once the trio task has ended.

        Raises:
            RuntimeError: the bus has stopped.
            Unavailable: the bus stopped before ``async_fn`` returned.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()  # a plain object until trio enters it
        self._submit(self._spawn, future, scope, async_fn, args)
        try:
            # Shielded: cancelling the caller must not cancel the future, which stays
            # the way the trio task's end is known.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # (Harmless if the trio task has just ended: the scope is gone.)
            self._submit_if_running(scope.cancel)
            # Until the trio task has ended, it may still act (send, publish): the
            # caller goes on only once it has.
            await asyncio.wait([future])
            raise

    def _submit(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """Hand ``fn(*args)`` to trio (it runs at trio's next step)."""
        assert self._token is not None, "set before run_bus hands the handle out"
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise RuntimeError("the bus has stopped (its run_bus block ended, or it shut "
                               "down)") from None

    def _submit_if_running(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):
            self._submit(fn)

    # --- in trio ----------------------------------------------------------------------

    def _reply(self, future: asyncio.Future[T], result: outcome.Outcome[T] | None) -> None:
        """Settle ``future`` from trio (``None``: it was cancelled)."""
        self._loop.call_soon_threadsafe(_settle, future, result)

    def _call_sync(
        self, future: asyncio.Future[T], fn: Callable[[Unpack[Ts]], T], args: tuple[*Ts],
    ) -> None:
        try:
            result: outcome.Outcome[T] = outcome.Value(fn(*args))
        except Exception as exc:  # handed to the caller, never lost
            result = outcome.Error(exc)
        self._reply(future, result)

    def _spawn(
        self, future: asyncio.Future[T], scope: trio.CancelScope,
        async_fn: Callable[[Unpack[Ts]], Awaitable[T]], args: tuple[*Ts],
    ) -> None:
        assert self._nursery is not None, "set before run_bus hands the handle out"
        try:
            self._nursery.start_soon(self._serve_request, future, scope, async_fn, args)
        except RuntimeError:  # pragma: no cover - for one trio step, as the run ends
            # The bus has stopped, and its nursery takes no more tasks.
            self._reply(future, outcome.Error(Unavailable("the bus is stopping")))

    async def _serve_request(
        self, future: asyncio.Future[T], scope: trio.CancelScope,
        async_fn: Callable[[Unpack[Ts]], Awaitable[T]], args: tuple[*Ts],
    ) -> None:
        try:
            with scope:
                value = await async_fn(*args)
        except Exception as exc:  # handed to the caller, never lost
            self._reply(future, outcome.Error(exc))
            return
        except BaseException:
            # The nursery was cancelled: the bus stopped, or failed.
            self._reply(future, outcome.Error(Unavailable("the bus stopped")))
            raise
        # Leaving the scope by its own cancellation (the caller's) swallowed it.
        self._reply(future, None if scope.cancelled_caught else outcome.Value(value))


def _settle(future: asyncio.Future[T], result: outcome.Outcome[T] | None) -> None:
    """Settle ``future`` in asyncio, unless it already is (its caller is gone)."""
    if future.done():
        return
    if result is None:
        future.cancel()
    elif isinstance(result, outcome.Error):
        future.set_exception(result.error)
    else:
        future.set_result(result.unwrap())


class _BusRun:
    """The context manager :func:`run_bus` returns: the guest run's whole life.

    Entering starts the guest run and waits until the bus listens. Leaving stops it
    (gracefully after a normal exit, at once after an exception) and waits until the
    run has finished. If the trio side fails meanwhile, the task in the block is
    cancelled (as an asyncio TaskGroup cancels its parent), and the failure is raised
    in its place when the block ends.
    """

    def __init__(self, bus: EventBus, host: str, port: int, serve_options: dict[str, Any]):
        self._bus = bus
        self._host = host
        self._port = port
        self._serve_options = serve_options
        self._scope = trio.CancelScope()  # a plain object until trio enters it
        self._handle: EmbeddedBus | None = None
        self._task: asyncio.Task[Any] | None = None
        self._started: asyncio.Future[int] | None = None
        self._done: asyncio.Future[outcome.Outcome[None]] | None = None
        self._inside = False  # the block is running: a failure of the bus cancels it
        self._cancelled_task = False

    async def __aenter__(self) -> EmbeddedBus:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started = loop.create_future()
        self._done = loop.create_future()
        self._handle = handle = EmbeddedBus(loop, self._bus)
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                "a trio run is already active in this thread (another run_bus block, "
                "say): an asyncio loop hosts one trio guest run at a time")
        trio.lowlevel.start_guest_run(
            self._main, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon, done_callback=self._finished,
            # asyncio owns the process's signals: its add_signal_handler() relies on
            # the wakeup fd, which trio would otherwise take over.
            host_uses_signal_set_wakeup_fd=True,
        )
        # Allowed by trio between start_guest_run() and the run's first step; from now
        # on, asyncio reaches trio through this token only.
        handle._token = trio.lowlevel.current_trio_token()
        try:
            either: list[asyncio.Future[Any]] = [self._started, self._done]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._stop_now()
            await self._wait_finished()
            raise
        if not self._started.done():  # pragma: no cover - a TrioInternalError, say
            # The run ended before listening, and not by an exception of the bus.
            await self._wait_finished()
            self._done.result().unwrap()
            raise RuntimeError("the bus stopped before it listened")
        failure = self._started.exception()
        if failure is not None:
            # Listening failed (the port is taken, say): raised as it is, once the run
            # has ended (its outcome holds the same exception, in a group).
            await self._wait_finished()
            raise failure
        handle._port = port = self._started.result()
        scheme = "wss" if self._serve_options.get("ssl_context") is not None else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        handle._url = f"{scheme}://{host}:{port}/"
        self._inside = True
        return handle

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._task is not None
        assert self._done is not None
        self._inside = False
        if exc is None:
            self._stop_gracefully()
        else:
            self._stop_now()
        cancelled = await self._wait_finished()
        if self._cancelled_task and self._task.uncancel() == 0 and isinstance(
                exc, asyncio.CancelledError):
            exc = None  # the cancellation that the bus's failure caused: taken back
        run = self._done.result()
        if isinstance(run, outcome.Error):
            # The bus's failure wins over the cancellation it caused (and any other).
            error = run.error
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                error = BaseExceptionGroup("the run_bus block and the bus both failed",
                                           [exc, run.error])
            error.__suppress_context__ = True
            raise error
        if cancelled and exc is None:
            raise asyncio.CancelledError
        return False

    def _stop_gracefully(self) -> None:
        assert self._handle is not None
        self._handle._submit_if_running(self._bus.shutdown)

    def _stop_now(self) -> None:
        assert self._handle is not None
        self._handle._submit_if_running(self._scope.cancel)

    async def _wait_finished(self) -> bool:
        """Wait until the guest run has finished, even through cancellations (trio
        must not be left half-way). Returns whether the task was cancelled meanwhile;
        a cancellation turns a graceful stop into an immediate one."""
        assert self._done is not None
        cancelled = False
        while not self._done.done():
            try:
                await asyncio.wait([self._done])
            except asyncio.CancelledError:
                cancelled = True
                self._stop_now()
        return cancelled

    def _finished(self, run: outcome.Outcome[None]) -> None:
        """The guest run's done callback (called in the asyncio thread)."""
        assert self._done is not None
        assert self._task is not None
        self._done.set_result(run)
        if isinstance(run, outcome.Error) and self._inside and not self._task.done():
            # Nobody awaits the bus: interrupt the block, whose exit raises the error.
            self._cancelled_task = True
            self._task.cancel()

    async def _main(self) -> None:
        """The guest run: serve the bus, and run the requests from asyncio."""
        assert self._handle is not None
        assert self._started is not None
        handle = self._handle
        with self._scope:
            async with trio.open_nursery() as nursery:
                try:
                    listeners = await nursery.start(self._serve, nursery)
                except BaseException as exc:
                    # Raised by entering the block, as it is (not in this nursery's group).
                    if isinstance(exc, Exception):
                        handle._reply(self._started, outcome.Error(exc))
                    raise
                handle._nursery = nursery
                handle._reply(self._started, outcome.Value(_port_of(listeners[0])))

    async def _serve(
        self, nursery: trio.Nursery,
        task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self._bus.serve(self._host, self._port, task_status=task_status,
                              **self._serve_options)
        # Shut down (by run_bus's exit, or by the app): the requests still running
        # are cut short, and the run ends.
        nursery.cancel_scope.cancel()


def _port_of(listener: trio.abc.Listener[Any]) -> int:
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener)
    port: int = listener.socket.getsockname()[1]
    return port


def run_bus(
    bus: EventBus, host: str = "127.0.0.1", port: int = 8765, **serve_options: Any,
) -> contextlib.AbstractAsyncContextManager[EmbeddedBus]:
    """Serve ``bus`` inside the running asyncio program, for the length of a block::

        async with run_bus(bus, port=0) as running:
            print("listening on", running.url)
            await running.emit("hello", to="lobby")

    Trio runs in guest mode on the asyncio loop (:func:`trio.lowlevel.start_guest_run`):
    the bus's handlers and hooks run in trio, as under ``trio.run``; asyncio code
    reaches the bus through the :class:`EmbeddedBus` the block gets. In a FastAPI or
    Starlette app, run it in the lifespan (see :doc:`/howto/asyncio`).

    - Entering listens (``port=0`` picks a free port: see
      :attr:`EmbeddedBus.port`), or raises what listening raised (``OSError``).
    - Leaving normally shuts the bus down gracefully (:meth:`EventBus.shutdown
      <eventbus.EventBus.shutdown>`: it drains, then closes every connection with
      1001) and waits until trio's run has finished. Leaving by an exception (or a
      cancellation) stops the bus at once, as :meth:`EventBus.running
      <eventbus.EventBus.running>` does.
    - If the bus fails while the block runs, the task in the block is cancelled and
      the bus's exception is raised from the block in place of the cancellation
      (from trio's nurseries: an :exc:`ExceptionGroup`).

    One asyncio loop (one thread) hosts one trio run: entering a second ``run_bus``
    while one runs in the same thread raises :exc:`RuntimeError`. To serve two buses,
    give them one ``run_bus`` each in their own threads and loops, or serve both
    from one trio program.

    Args:
        bus: The bus to serve; register its handlers and hooks first.
        host: The address to listen on.
        port: The port (0 picks a free one).
        serve_options: The other arguments of :meth:`EventBus.serve
            <eventbus.EventBus.serve>` (``ssl_context``, ``reuse_port``).

    Raises:
        RuntimeError: a trio run is already active in this thread.

    .. versionadded:: 0.2.0
    """
    return _BusRun(bus, host, port, serve_options)
