"""Smoke tests of examples/: run each example as a person would, from the repository
root with the venv's python, in its bounded demo mode on free ports of 127.0.0.1,
and check from its output that real traffic flowed (messages received, acks, bot
replies, binary state frames), not merely that a process started.

Each run has a hard timeout; the output is shown in full when an assertion fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
