"""The well-behaved clients: the bystander, which measures echo round trips for the
whole run, and the newcomer, which checks that a new client can still get in.

The bystander sends ``echo`` requests at a fixed rate (open loop: it does not wait
for one answer before sending the next), so a server that stalls for a second makes
every request of that second late, not just one; the round trip of each request is
measured from the moment it was due. Requests that get an error, or no answer
before the run ends, are failures.
"""

from __future__ import annotations

import json
import select
import sys
import time
from typing import Any

from .wire import CLOSE, JSON, PING, PONG, TEXT, FrameReader, client_frame, close_code, connect

__all__ = ["main", "newcomer", "run_bystander"]


def run_bystander(port: int, rate: float, until: float) -> dict[str, Any]:
    """Connect, print ``ready <welcome options>`` on stdout, then send ``echo`` at
    ``rate`` per second until a line (or end of file) arrives on stdin, or at the
    latest until ``time.monotonic()`` reaches ``until``; then wait up to a second
    more for the last answers.

    Returns:
        ``sent_at`` (monotonic times the requests were due), ``rtt_ms`` (the round
        trip of each, ``None`` for a failure), ``failures`` (count by cause) and
        ``closed`` (the close code, or ``"eof"``, if the server ended the connection).
    """
    sock, rest = connect(port, JSON)
    sock.setblocking(False)
    reader = FrameReader()
    pending: dict[int, int] = {}  # ack id -> index in sent_at
    sent_at: list[float] = []
    rtt: list[float | None] = []
    failures: dict[str, int] = {}
    closed: int | str | None = None
    welcomed = False
    interval = 1.0 / rate
    next_send = 0.0
    stop_at = until + 1.0

    def fail(index: int, cause: str) -> None:
        rtt[index] = None
        failures[cause] = failures.get(cause, 0) + 1

    def handle(opcode: int, payload: bytes) -> None:
        nonlocal welcomed, closed, next_send
        now = time.monotonic()
        if opcode == PING:
            sock.setblocking(True)
            sock.sendall(client_frame(PONG, payload))
            sock.setblocking(False)
        elif opcode == CLOSE:
            closed = close_code(payload) or "close"
        elif opcode == TEXT:
            packet = json.loads(payload)
            if packet[0] == 0 and not welcomed:
                welcomed = True
                next_send = now
                print("ready " + json.dumps(packet[3]), flush=True)
            elif packet[0] == 7 and packet[1] in pending:
                index = pending.pop(packet[1])
                rtt[index] = 1000.0 * (now - sent_at[index])
            elif packet[0] == 8 and packet[1] in pending:
                fail(pending.pop(packet[1]), str(packet[2]))

    events = reader.feed(rest)
    ack_id = 0
    watch: list[Any] = [sock, sys.stdin]
    while closed is None:
        for opcode, payload in events:
            handle(opcode, payload)
        events = []
        now = time.monotonic()
        if welcomed and now >= until and not pending:
            break
        if now >= stop_at:
            break
        while welcomed and now >= next_send and next_send < until:
            ack_id += 1
            sent_at.append(next_send)
            rtt.append(None)
            pending[ack_id] = len(sent_at) - 1
            text = json.dumps([1, "echo", f"n{ack_id}", ack_id], separators=(",", ":"))
            sock.setblocking(True)
            try:
                sock.sendall(client_frame(TEXT, text.encode()))
            except OSError:
                closed = "eof"
                break
            finally:
                sock.setblocking(False)
            next_send += interval
        target = next_send if welcomed and next_send < until else stop_at
        wait = max(0.0, min(target, stop_at) - now)
        readable, _, _ = select.select(watch, [], [], wait)
        if sys.stdin in readable:
            sys.stdin.readline()
            watch = [sock]
            until = min(until, time.monotonic())
            stop_at = until + 1.0
        if sock in readable:
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed = "eof"
                break
            events = reader.feed(data)
    for index in pending.values():
        fail(index, "unanswered")
    sock.close()
    return {"sent_at": sent_at, "rtt_ms": rtt, "failures": failures, "closed": closed,
            "welcomed": welcomed}


def newcomer(port: int, deadline_s: float) -> tuple[bool, float, str]:
    """Open a new connection, wait for its welcome, and get one echo answered.

    Returns:
        Whether it all happened within ``deadline_s``, the seconds it took (or
        until it failed), and what failed (empty on success).
    """
    started = time.monotonic()
    end = started + deadline_s
    try:
        sock, rest = connect(port, JSON, timeout=deadline_s)
    except OSError as exc:
        return False, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
    reader = FrameReader()
    events = reader.feed(rest)
    try:
        sent = False
        while True:
            for opcode, payload in events:
                if opcode == CLOSE:
                    return False, time.monotonic() - started, f"closed {close_code(payload)}"
                if opcode != TEXT:
                    continue
                packet = json.loads(payload)
                if packet[0] == 7 and packet[1] == 1:
                    return True, time.monotonic() - started, ""
                if packet[0] == 8 and packet[1] == 1:
                    return False, time.monotonic() - started, f"error {packet[2]}"
                if packet[0] == 0 and not sent:
                    sock.sendall(client_frame(TEXT, b'[1,"echo","hello",1]'))
                    sent = True
            left = end - time.monotonic()
            if left <= 0:
                what = "echo" if sent else "welcome"
                return False, time.monotonic() - started, f"no {what} within {deadline_s} s"
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return False, time.monotonic() - started, "connection closed"
            events = reader.feed(data)
    except OSError as exc:
        return False, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()


def main(argv: list[str]) -> int:
    """``bystander PORT RATE UNTIL``: run the bystander, print its result as JSON."""
    port, rate, until = int(argv[0]), float(argv[1]), float(argv[2])
    try:
        result = run_bystander(port, rate, until)
    except OSError as exc:
        result = {"sent_at": [], "rtt_ms": [], "failures": {"connect": 1},
                  "closed": f"{type(exc).__name__}: {exc}", "welcomed": False}
        print("ready {}", flush=True)
    print(json.dumps(result), flush=True)
    return 0
