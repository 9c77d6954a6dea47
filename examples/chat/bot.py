"""The chat bot: a Python client that sits in a room and answers.

It answers messages that start with ``!`` (``!help``, ``!time``, ``!roll``,
``!who``) or that mention it, and greets whoever joins. Replies go out with
``client.call("chat.say", ...)``, which waits for the server's ack, and so must
not run inside an ``on`` handler (those run in the client's reader task, which is
the task that would read the ack): the handlers put work in a channel, and a
worker task sends the replies.

Run alone against a running chat bus:
    .venv/bin/python examples/chat/bot.py ws://127.0.0.1:8765/
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

import trio

import eventbus

HELP = "I answer !time, !roll, !who and !help, and anything that mentions me."


def reply_to(text: str, sender: str, nick: str, members: set[str]) -> str | None:
    """The bot's answer to a message, or ``None`` to stay quiet."""
    command = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    if command == "!help":
        return HELP
    if command == "!time":
        return f"It is {time.strftime('%H:%M:%S')} here, {sender}."
    if command == "!roll":
        return f"{sender} rolled a {random.randint(1, 6)}."
    if command == "!who":
        return "Here now: " + ", ".join(sorted(members)) + "."
    if nick.lower() in text.lower():
        return f"Hi {sender}! {HELP}"
    return None


async def run_bot(
    url: str, *, nick: str = "bot", room: str = "lobby", stats: Counter[str] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sit in ``room`` and answer until cancelled."""
    stats = stats if stats is not None else Counter()
    send, receive = trio.open_memory_channel[str](100)
    members: set[str] = set()
    backoff = eventbus.Backoff(initial=0.2, cap=2.0)
    async with eventbus.connect(f"{url}?nick={quote(nick)}", reconnect=backoff) as client:

        @client.on("message")
        def on_message(message: dict[str, Any]) -> None:
            stats["messages seen"] += 1
            answer = reply_to(message["text"], message["nick"], nick, members)
            if answer is not None:
                send.send_nowait(answer)

        @client.on("presence")
        def on_presence(event: dict[str, Any]) -> None:
            if event["action"] == "joined":
                members.add(event["nick"])
                send.send_nowait(f"Welcome to #{event['room']}, {event['nick']}! Try !help.")
            else:
                members.discard(event["nick"])

        async def enter() -> None:
            joined = await client.call("chat.join", {"room": room})
            members.clear()
            members.update(joined["members"])

        # Server-side rooms are not rejoined by the client: do it after a reconnect.
        client.on_reconnect(enter)
        await enter()
        print(f"{nick}: joined #{room}", flush=True)
        task_status.started()
        async for answer in receive:
            message = await client.call("chat.say", {"text": answer})  # acked by the bus
            stats["replies"] += 1
            print(f"{nick}: replied {message['text']!r}", flush=True)


async def cancel_on_ctrl_c(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at Ctrl-C (SIGINT). Received here, Ctrl-C stops the example by
    cancellation, at each task's next checkpoint, rather than as a KeyboardInterrupt
    raised wherever the code happens to be (in the middle of a print, say)."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()


async def main(url: str) -> bool:
    """Run the bot until Ctrl-C; returns whether Ctrl-C stopped it."""
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            await run_bot(url)
            nursery.cancel_scope.cancel()
    return ctrl_c.cancelled_caught


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    try:
        interrupted = trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/")
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
