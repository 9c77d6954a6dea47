"""Smoke tests of examples/: run each example as a person would, from the repository
root with the venv's python, in its bounded demo mode on free ports of 127.0.0.1,
and check from its output that real traffic flowed (messages received, acks, bot
replies, binary state frames), not merely that a process started. The examples that
run until Ctrl-C are started, given SIGINT once they serve, and must exit with 130
and no traceback.

Each run has a hard timeout; the output is shown in full when an assertion fails.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import trio

from eventbus import EventBus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(*args: str, timeout: float = 45) -> str:
    """Run ``python examples/...`` from the repository root; return its output."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    output = f"{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{output}"
    assert "Traceback" not in proc.stderr, output
    return output


def number(pattern: str, output: str) -> int:
    match = re.search(pattern, output)
    assert match is not None, f"no match for {pattern!r} in:\n{output}"
    return int(match.group(1))


def test_rooms() -> None:
    out = run_example("examples/rooms/run.py")
    # join and leave
    assert "alice joined lobby at seq 0" in out, out
    assert "lobby has 2 members" in out, out
    assert "bob received ['hello bob']" in out, out
    assert "after bob left, lobby has 1 member" in out, out
    assert "the server put bob in ['kitchen']" in out, out
    # broadcast except the sender
    assert "ada's shout reached 2 members" in out, out
    assert "the server's announcement reached 3 members" in out, out
    assert "ada received: announced: the show starts; said: bob here\n" in out, out
    assert "bob received: announced: the show starts; shouted: {'from': 'ada'" in out, out
    # room acks
    assert "ada answered 'yes'" in out, out
    assert "bob answered with an error: [forbidden] bob does not vote" in out, out
    assert "cy answered with an error: [unknown_event]" in out, out
    assert "dee did not answer in time" in out, out
    # authorization
    assert "a bad token is refused before the upgrade: HTTP 401" in out, out
    assert "bob may not join team-red: [forbidden]" in out, out
    assert "bob may not publish announcements: [forbidden]" in out, out
    assert "ada, an admin, published announcement seq 1" in out, out
    assert "bob was disconnected with close code 4003" in out, out
    assert "all room scripts finished" in out, out


def test_topics() -> None:
    out = run_example("examples/topics/run.py", "--port", "0", "--duration", "4",
                      "--restart-after", "1.5")
    assert re.search(r"bus: listening on ws://127\.0\.0\.1:\d+/", out), out
    assert number(r"publisher: (\d+) price acks", out) > 10, out
    assert number(r"\((\d+) deliveries\)", out) > 10, out
    assert number(r"(\d+) news acks", out) >= 2, out
    for name in ("subscriber-1", "subscriber-2"):
        assert number(rf"{name}: (\d+) prices", out) > 10, out
        assert number(rf"{name}: \d+ prices, (\d+) news", out) >= 2, out
        # The bus restarted: each subscriber reconnected and joined its topics again.
        assert number(rf"{name}: \d+ prices, \d+ news, (\d+) reconnects", out) == 1, out
        assert f"{name}: reconnected, topics joined again, 3 prices in the snapshot" in out, out
    assert "bus: restarting" in out, out
    assert "news: ACME opens a new anvil factory" in out, out


def test_game() -> None:
    out = run_example("examples/game/run.py", "--port", "0", "--duration", "3")
    ticks = number(r"server: (\d+) ticks", out)
    assert ticks >= 30, out
    assert number(r"(\d+) state frames handed to players", out) >= 3 * 30, out
    for name in ("ada", "bob", "cy"):
        frames = number(rf"{name}: (\d+) binary state frames", out)
        assert frames >= 30, out
        # 10 bytes of header and 8 per player, three players: struct-packed, not JSON.
        assert number(rf"{name}: \d+ binary state frames \((\d+) bytes each\)", out) == 34, out
        assert number(rf"{name}: .* (\d+) inputs sent", out) > 5, out


def test_chat_demo() -> None:
    out = run_example("examples/chat/run.py", "--demo", "--http-port", "0", "--bus-port", "0")
    assert re.search(r"chat: open http://127\.0\.0\.1:\d+/ in a browser", out), out
    for path in ("/", "/chat.js", "/eventbus.js", "/config.js"):
        assert re.search(rf"visitor: GET {re.escape(path)} -> 200 \([1-9]\d* bytes\)", out), out
    assert "visitor: joined #lobby with bot, visitor" in out, out
    assert "visitor: received bot: Welcome to #lobby, visitor!" in out, out
    assert re.search(r"visitor: received bot: visitor rolled a [1-6]\.", out), out
    assert number(r"visitor: \d+ pages fetched, (\d+) messages acked", out) == 2, out
    assert number(r"(\d+) bot replies received", out) >= 3, out
    assert number(r"bot: saw (\d+) messages", out) >= 2, out


@pytest.mark.parametrize("script", sorted(p.name for p in (EXAMPLES / "rooms").glob("*.py")
                                          if p.name != "run.py"))
def test_each_room_script_runs_alone(script: str) -> None:
    out = run_example(f"examples/rooms/{script}")
    assert out.strip(), out


# --- Ctrl-C -----------------------------------------------------------------------------


class Output:
    """Lines of a subprocess pipe, kept for the failure message."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.text = ""

    async def wait_for(self, *patterns: str) -> None:
        """Read until a line matching each of ``patterns`` has been printed."""
        while not all(re.search(f"^{pattern}\n", self.text, re.MULTILINE)
                      for pattern in patterns):
            data = await self.stream.receive_some()
            assert data, f"the example ended before printing {patterns}:\n{self.text}"
            self.text += data.decode()

    async def rest(self) -> str:
        while data := await self.stream.receive_some():
            self.text += data.decode()
        return self.text


async def stop(process: trio.Process) -> None:
    """Kill the process if it still runs, and close its pipes."""
    process.kill()
    await process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()


async def interrupt(process: trio.Process, stdout: Output) -> str:
    """Send SIGINT, as Ctrl-C does; returns everything it wrote, once it has exited."""
    assert process.stderr is not None
    stderr = Output(process.stderr)
    process.send_signal(signal.SIGINT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stdout.rest)
        nursery.start_soon(stderr.rest)
        await process.wait()
    output = f"{stdout.text}\n--- stderr ---\n{stderr.text}"
    assert process.returncode == 130, f"exit code {process.returncode}\n{output}"
    assert "Traceback" not in stderr.text, output
    return output


@pytest.mark.parametrize(
    ("args", "serving"),
    [
        (["chat/run.py", "--http-port", "0", "--bus-port", "0"], ["bot: joined #lobby"]),
        (["game/run.py", "--port", "0"], [r"tick \d+: scores ada \d+, bob \d+, cy \d+"]),
        (["topics/run.py", "--port", "0"], ["subscriber-1: subscribed to prices and news",
                                            "subscriber-2: subscribed to prices and news"]),
    ],
    ids=["chat", "game", "topics"],
)
async def test_ctrl_c_stops_an_example_with_130(args: list[str], serving: list[str]) -> None:
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, f"examples/{args[0]}", *args[1:]], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            stdout = Output(process.stdout)
            await stdout.wait_for(*serving)
            output = await interrupt(process, stdout)
            # Stopped by cancellation, as at the end of --duration: it prints its summary.
            assert "\ninterrupted\n\nsummary\n" in output, output
        finally:
            await stop(process)


def load_app(example: str) -> ModuleType:
    """examples/EXAMPLE/app.py, under a name of its own (each example has an app.py)."""
    spec = importlib.util.spec_from_file_location(f"{example}_app", EXAMPLES / example / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chat_bus() -> EventBus:
    bus: EventBus = load_app("chat").make_bus()
    return bus


def game_bus() -> EventBus:
    bus: EventBus = load_app("game").make_game().bus
    return bus


def topics_bus() -> EventBus:
    bus: EventBus = load_app("topics").make_bus()
    return bus


@pytest.mark.parametrize(
    ("script", "make_bus", "ready"),
    [
        ("chat/bot.py", chat_bus, lambda bus: bool(bus.members("lobby"))),
        ("game/bot.py", game_bus, lambda bus: bool(bus.members("arena"))),
        ("topics/publisher.py", topics_bus, lambda bus: bool(bus.connections)),
        ("topics/subscriber.py", topics_bus, lambda bus: bool(bus.members("news"))),
    ],
    ids=["chat-bot", "game-bot", "topics-publisher", "topics-subscriber"],
)
async def test_ctrl_c_stops_a_client_script_with_130(
    script: str, make_bus: Callable[[], EventBus], ready: Callable[[EventBus], bool],
) -> None:
    # The script runs alone against its example's bus, served here.
    bus = make_bus()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
            process = await trio.lowlevel.open_process(
                [sys.executable, f"examples/{script}", url], cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                while not ready(bus):  # noqa: ASYNC110 - the bus has no event for this
                    await trio.sleep(0.01)
                await interrupt(process, Output(process.stdout))
            finally:
                await stop(process)
            nursery.cancel_scope.cancel()
