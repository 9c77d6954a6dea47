"""The outbound queue's policies, without sockets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus.server.outbox import Delivery, Outbox
from eventbus.server.rooms import RoomRegistry


def gap_frame(room: str | None, count: int) -> bytes:
    return f"gap:{room}:{count}".encode()


def drain(box: Outbox) -> bytes:
    out = b""
    while len(box) or box.gaps:
        out += box.take(1 << 20) + b"|"
    return out


def test_reliable_overflow_is_refused_not_dropped() -> None:
    box = Outbox(max_messages=3, max_bytes=1000, encode_gap=gap_frame)
    assert all(box.push(b"m", Delivery.RELIABLE) for _ in range(3))
    assert not box.push(b"m", Delivery.RELIABLE)
    assert len(box) == 3


def test_byte_bound_applies_too() -> None:
    box = Outbox(max_messages=100, max_bytes=10, encode_gap=gap_frame)
    assert box.push(b"x" * 10)
    assert not box.push(b"y")


def test_volatile_overflow_is_counted_and_reported_before_later_messages() -> None:
    box = Outbox(max_messages=2, max_bytes=1000, encode_gap=gap_frame)
    for n in range(5):
        assert box.push(f"v{n}".encode(), Delivery.VOLATILE, room="r")
    assert len(box) == 2
    assert box.gaps == {"r": 3}
    assert box.dropped == 3
    assert not box.idle
    # The drops came after v0 and v1 were queued, so the report follows them.
    assert drain(box) == b"v0v1|gap:r:3|"
    assert box.idle


def test_gap_goes_before_the_next_message_once_there_is_room() -> None:
    box = Outbox(max_messages=1, max_bytes=1000, encode_gap=gap_frame)
    box.push(b"a", Delivery.VOLATILE, room="r")
    box.push(b"b", Delivery.VOLATILE, room="r")  # dropped
    box.push(b"c", Delivery.VOLATILE, room=None)  # dropped, direct
    assert box.take(1) == b"a"
    box.push(b"d", Delivery.RELIABLE)
    assert drain(box) == b"gap:r:1gap:None:1d|"


def test_latest_supersedes_the_queued_message_with_the_same_key() -> None:
    box = Outbox(max_messages=3, max_bytes=1000, encode_gap=gap_frame)
    box.push(b"other", Delivery.RELIABLE)
    for n in range(10):
        assert box.push(f"p{n}".encode(), Delivery.LATEST, room="g", key="player")
    box.push(b"q0", Delivery.LATEST, room="g", key="enemy")  # full: dropped
    assert len(box) <= 3 + 1
    # Every drop is reported, each report before the messages queued after it, and
    # the newest state is what arrives.
    out = drain(box)
    assert out == b"othergap:g:1gap:g:1p9|gap:g:8|"
    assert sum(int(n) for n in re.findall(rb"gap:g:(\d+)", out)) == 10


def test_latest_without_a_match_in_a_full_queue_is_dropped() -> None:
    box = Outbox(max_messages=1, max_bytes=1000, encode_gap=gap_frame)
    box.push(b"r", Delivery.RELIABLE)
    assert box.push(b"p", Delivery.LATEST, room="g", key="k")
    assert box.gaps == {"g": 1}
    assert drain(box) == b"r|gap:g:1|"


def test_superseded_entries_never_pile_up() -> None:
    box = Outbox(max_messages=4, max_bytes=10_000, encode_gap=gap_frame)
    for n in range(10_000):
        box.push(f"{n}".encode(), Delivery.LATEST, room="g", key=str(n % 2))
    assert len(box) <= 4 + 1
    assert len(box._entries) <= 2 * len(box) + 1


def test_a_gap_goes_before_a_latest_message_queued_after_the_drop() -> None:
    box = Outbox(max_messages=1, max_bytes=1000, encode_gap=gap_frame)
    box.push(b"B")
    box.push(b"L0", Delivery.LATEST, room="r", key="k")  # full: dropped
    assert box.take(100) == b"B"
    box.push(b"L1", Delivery.LATEST, room="r", key="k")
    assert drain(box) == b"gap:r:1L1|"


def test_control_frames_and_partial_writes_bypass_the_bounds() -> None:
    box = Outbox(max_messages=1, max_bytes=1, encode_gap=gap_frame)
    box.push(b"full")
    box.push_control(b"pong")
    box.push_front(b"rest-of-frame")
    assert drain(box) == b"rest-of-framefullpong|"


def test_rooms_track_members_in_order_and_disappear_when_empty() -> None:
    rooms: RoomRegistry[str] = RoomRegistry()
    first = rooms.join("r", "a")
    rooms.join("r", "b")
    rooms.join("r", "a")
    assert list(first.members) == ["a", "b"]
    assert first.position is None  # positions come from the adapter
    rooms.leave("r", "a")
    rooms.leave("r", "nobody")
    assert "r" in rooms
    rooms.leave("r", "b")
    assert "r" not in rooms
    assert rooms.join("r", "c") is not first
    rooms.leave("missing", "c")
    assert len(rooms) == 1
    assert [room.name for room in rooms] == ["r"]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=5),
    st.lists(st.tuples(
        st.sampled_from(["volatile", "latest", "take"]),
        st.sampled_from(["r1", "r2", None]),
        st.sampled_from(["k1", "k2"]),
    ), max_size=60),
)
def test_every_message_is_delivered_or_reported_and_the_queue_stays_bounded(
    size: int, steps: list[tuple[str, str | None, str]],
) -> None:
    box = Outbox(max_messages=size, max_bytes=10_000, encode_gap=gap_frame)
    pushed = 0
    out = b""
    for n, (action, room, key) in enumerate(steps):
        if action == "take":
            out += box.take(1 << 20)
            continue
        pushed += 1
        box.push(f"<{n}>".encode(), Delivery(action), room=room, key=key)
        assert len(box) <= size + 3  # one message over, plus a report per room
    out += drain(box)
    delivered = len(re.findall(rb"<\d+>", out))
    reported = sum(int(c) for c in re.findall(rb"gap:[^:]+:(\d+)", out))
    assert delivered + reported == pushed
    assert box.idle


def test_gaps_are_counted_by_the_policy_of_the_drops_they_report() -> None:
    box = Outbox(max_messages=1, max_bytes=1000, encode_gap=gap_frame)
    box.push(b"A")
    box.push(b"v", Delivery.VOLATILE, room="r")  # dropped: volatile, room r
    box.push(b"l", Delivery.LATEST, room="r", key="k")  # dropped: latest, room r
    box.push(b"l", Delivery.LATEST, room="s", key="k")  # dropped: latest, room s
    box.push(b"d", Delivery.VOLATILE, room=None)  # dropped: volatile, direct
    assert drain(box) == b"A|gap:r:2gap:s:1gap:None:1|"
    assert (box.gaps_sent, box.gaps_volatile, box.gaps_latest) == (3, 2, 2)
    assert (box.dropped, box.dropped_latest) == (4, 2)
