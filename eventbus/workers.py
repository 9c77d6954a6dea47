"""``eventbus serve --workers N``: one bus on every core, as N processes.

Past one core, eventbus scales with processes. The supervisor starts N worker
processes, each an ordinary ``eventbus serve`` of the same app on the same port
(``SO_REUSEPORT``: the kernel spreads new connections among them), joined into
one bus through Redis. It forwards SIGINT and SIGTERM to the workers once (they
run in their own process groups, so a terminal's Ctrl-C reaches them only
through it) and waits for them; a worker that dies is started again, unless it
dies at once, which means it cannot start at all (a busy port, a broken app).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import trio

__all__ = ["supervise"]

logger = logging.getLogger("eventbus.workers")

#: A worker that ends sooner than this after its start could not start at all.
_START_FAILURE = 2.0
#: The pause before a worker that died is started again.
_RESTART_DELAY = 1.0


async def supervise(count: int, argv: Sequence[str]) -> int:
    """Run ``count`` workers, each ``python -m eventbus serve <argv>``, until a
    signal stops them or one cannot start; returns the exit status for the
    supervisor (130 after SIGINT, 0 after SIGTERM, a worker's status if one could
    not start)."""
    command = [sys.executable, "-m", "eventbus", "serve", *argv]
    processes: dict[int, trio.Process] = {}
    stopping = trio.Event()
    status = 0

    async def worker(index: int) -> None:
        nonlocal status
        while not stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(command, start_new_session=True)
            processes[index] = process
            logger.info("worker %d started (pid %d)", index, process.pid)
            code = await process.wait()
            del processes[index]
            if stopping.is_set():
                return
            if trio.current_time() - started < _START_FAILURE:
                logger.error("worker %d could not start (exit status %d): stopping", index,
                             code)
                status = code or 1
                stopping.set()
                for other in list(processes.values()):
                    _send(other, signal.SIGTERM)
                return
            logger.warning("worker %d (pid %d) ended with status %d; starting it again",
                           index, process.pid, code)
            await trio.sleep(_RESTART_DELAY)

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            for index in range(count):
                nursery.start_soon(worker, index)

            async def forward() -> None:
                nonlocal status
                async for signum in signals:
                    stopping.set()
                    status = 130 if signum == signal.SIGINT else 0
                    logger.info("%s: stopping %d workers", signal.Signals(signum).name,
                                len(processes))
                    for process in list(processes.values()):
                        _send(process, signum)

            nursery.start_soon(forward)
            await stopping.wait()
            # Each worker got one signal (forwarded, or SIGTERM when another could not
            # start) and shuts down gracefully; past 30 s it is killed.
            with trio.move_on_after(30):
                while processes:  # noqa: ASYNC110 - each worker task ends on its exit
                    await trio.sleep(0.05)
            for process in list(processes.values()):
                _send(process, signal.SIGKILL)
            nursery.cancel_scope.cancel()
    return status


def _send(process: trio.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
        process.send_signal(signum)

