"""The Redis adapter's hand-over on its own, with a history in memory instead of
Redis: the cases a real Redis makes hard to time (a history read that fails
halfway, an epoch that changes during a repair, a repair longer than a page)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from eventbus import Unavailable
from eventbus.adapters import Envelope, HistoryBounds, HistoryPage, Signal, SignalKind
from eventbus.adapters.conformance import RecordingNode
from eventbus.adapters.redis.handover import CATCH_UP, PAGE, HandOver, Inbox
from eventbus.adapters.redis.keys import Keys
from eventbus.adapters.redis.logs import LogBudget
from eventbus.adapters.redis.rooms import Rooms
from eventbus.adapters.redis.scripts import Scripts
from eventbus.protocol import Position

COUNTERS = ("repaired", "lost_received", "epochs_lost")


class History:
    """A room's history as the hand-over reads it: every seq of ``epoch`` from
    ``first`` to ``last``. After ``fail_after`` reads the next ones fail; after
    ``lost_after`` reads Redis has lost the room (a new epoch, empty)."""

    def __init__(self, epoch: str, last: int, first: int = 1) -> None:
        self.epoch = epoch
        self.last = last
        self.first = first
        self.fail_after: int | None = None
        self.lost_after: int | None = None
        self.reads: list[tuple[int, int]] = []

    async def read(self, room: str, epoch: str, after: int, limit: int,
                   bounds: HistoryBounds) -> HistoryPage:
        await trio.lowlevel.checkpoint()
        if self.fail_after is not None and len(self.reads) >= self.fail_after:
            raise Unavailable("Redis went away")
        if self.lost_after is not None and len(self.reads) >= self.lost_after:
            self.epoch, self.last, self.first = "F", 0, 1
        self.reads.append((after, limit))
        position = Position(self.epoch, self.last)
        if epoch != self.epoch:
            return HistoryPage(position, self.first, [])
        seqs = range(max(after + 1, self.first), self.last + 1)[:limit]
        return HistoryPage(position, self.first, [(seq, Envelope(room, "e", seq))
                                                  for seq in seqs])


@asynccontextmanager
async def handing(history: History, *rooms: str
                  ) -> AsyncIterator[tuple[trio.MemorySendChannel[Inbox], RecordingNode,
                                           Rooms, dict[str, int]]]:
    """A hand-over of ``rooms`` running until the block ends, fed through the
    channel given."""
    counters = dict.fromkeys(COUNTERS, 0)
    tracked = Rooms(Keys("t"), Scripts(), linger=1.0, room_ms=1000)
    for room in rooms:
        tracked.want(room)
    node = RecordingNode("n")
    handover = HandOver(tracked, counters, history.read, log_lost=LogBudget())
    send, receive = trio.open_memory_channel[Inbox](100)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handover.run, node, receive)
            yield send, node, tracked, counters
            nursery.cancel_scope.cancel()


def live(seq: int, epoch: str = "E") -> tuple[Envelope, Position]:
    return Envelope("r", "e", seq), Position(epoch, seq)


async def settled(node: RecordingNode, delivered: int = 0, lost: int = 0) -> None:
    while len(node.delivered) < delivered or len(node.lost_reports) < lost:  # noqa: ASYNC110
        await trio.sleep(0.001)


def seqs(node: RecordingNode) -> list[tuple[str, int]]:
    return [(position.epoch, position.seq) for _, position in node.delivered]


async def test_a_long_repair_reads_page_after_page() -> None:
    missed = PAGE * 2 + 10
    history = History("E", missed + 2)
    async with handing(history, "r") as (send, node, _, counters):
        await send.send(live(1))
        await send.send(live(missed + 2))
        await settled(node, delivered=missed + 2)
        assert seqs(node) == [("E", seq) for seq in range(1, missed + 3)]
        assert [limit for _, limit in history.reads] == [PAGE, PAGE, 10]
        assert counters == {"repaired": missed, "lost_received": 0, "epochs_lost": 0}


@pytest.mark.parametrize("why", ["unavailable", "epoch"])
async def test_a_repair_cut_short_reports_the_rest_lost(why: str) -> None:
    history = History("E", PAGE + 12)
    async with handing(history, "r") as (send, node, _, counters):
        await send.send(live(1))
        await settled(node, delivered=1)
        if why == "unavailable":
            history.fail_after = 1
        else:
            history.lost_after = 1
        await send.send(live(PAGE + 12))
        await settled(node, delivered=PAGE + 2, lost=1)
        assert seqs(node) == [("E", seq) for seq in [*range(1, PAGE + 2), PAGE + 12]]
        assert node.lost_reports == [("r", 10)], "what the first page did not bring"
        assert counters == {"repaired": PAGE, "lost_received": 10, "epochs_lost": 0}


async def test_trimmed_history_and_duplicates() -> None:
    history = History("E", 9, first=6)
    async with handing(history, "r") as (send, node, _, counters):
        await send.send(live(1))
        await send.send(live(9))
        await send.send(live(7))  # handed already, from history
        await send.send(live(10))
        await settled(node, delivered=6, lost=1)
        assert seqs(node) == [("E", seq) for seq in (1, 6, 7, 8, 9, 10)]
        assert node.lost_reports == [("r", 4)]
        assert counters == {"repaired": 3, "lost_received": 4, "epochs_lost": 0}


async def test_a_room_behind_is_caught_up_once_the_inbox_is_empty() -> None:
    history = History("E", 5)
    async with handing(history, "r", "quiet") as (send, node, rooms, counters):
        await send.send(live(1))
        await settled(node, delivered=1)
        # Found behind (as a resubscription would), while messages are queued:
        # they are handed first, then what is missing.
        await send.send(live(2))
        assert rooms.behind("r", Position("E", 5))
        assert not rooms.behind("r", Position("E", 4)), "known already"
        await send.send(CATCH_UP)
        await settled(node, delivered=5)
        assert seqs(node) == [("E", seq) for seq in range(1, 6)]
        assert history.reads == [(2, 3)]
        assert not rooms.behind("r", Position("E", 5)), "handed"

        # A room whose first message was dropped: nothing before it is owed.
        assert rooms.behind("quiet", Position("E", 5))
        await send.send(CATCH_UP)
        await settled(node, delivered=6)
        assert node.delivered[-1][0].room == "quiet"
        assert counters == {"repaired": 4, "lost_received": 0, "epochs_lost": 0}


async def test_a_new_epoch_reports_what_was_known_of_the_old_one() -> None:
    history = History("E", 1)
    async with handing(history, "r") as (send, node, rooms, counters):
        await send.send(live(1))
        await settled(node, delivered=1)
        # The node knew the room had reached 3 when Redis lost it; the new epoch
        # holds 1 and 2.
        assert rooms.behind("r", Position("E", 3))
        history.epoch, history.last = "F", 2
        await send.send(live(2, "F"))
        await settled(node, delivered=3, lost=1)
        assert seqs(node) == [("E", 1), ("F", 1), ("F", 2)]
        assert node.lost_reports == [("r", 2)], "2 and 3 of the old epoch"
        assert counters == {"repaired": 1, "lost_received": 2, "epochs_lost": 1}


async def test_signals_and_rooms_not_tracked_are_handed_as_they_come() -> None:
    history = History("E", 3)
    async with handing(history) as (send, node, _, counters):
        signal = Signal(SignalKind.TAKEOVER, "other", ["sid"])
        await send.send(live(3))
        await send.send(signal)
        await settled(node, delivered=1)
        while not node.signals:  # noqa: ASYNC110
            await trio.sleep(0.001)
        assert (seqs(node), node.signals) == ([("E", 3)], [signal])
        assert history.reads == []
        assert counters == dict.fromkeys(COUNTERS, 0)


async def test_the_hand_over_ends_with_its_inbox() -> None:
    rooms = Rooms(Keys("t"), Scripts(), linger=1.0, room_ms=1000)
    handover = HandOver(rooms, dict.fromkeys(COUNTERS, 0), History("E", 0).read,
                        log_lost=LogBudget())
    send, receive = trio.open_memory_channel[Inbox](1)
    send.close()
    with trio.fail_after(1):
        await handover.run(RecordingNode("n"), receive)
