"""The browser client (eventbus/static/eventbus.js) in a real headless Chromium.

The test runs an eventbus server on 127.0.0.1 in-process, then ``node run.mjs``, which
drives two pages with playwright-core and the system's Chromium: page A speaks JSON,
page B msgpack (@msgpack/msgpack). run.mjs serves the test page (page.html) and the
msgpack ESM build through page routes on the server's origin, so the pages load
``/eventbus.js`` from the server itself. It prints what happened as JSON; the assertions
are here.

Needs node, npm and chromium (``CHROMIUM`` names another binary). Without them the test
is skipped, with the reason, except under CI (``CI=true``), where that is a failure.
``npm ci`` runs in tests/browser/ when its node_modules is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from eventbus import EventBus
from eventbus.client.session import NO_RECONNECT_CLOSE_CODES
from eventbus.codes import CloseCode
from eventbus.server import Connection, Delivery

HERE = Path(__file__).resolve().parent
FLOOD_PAYLOAD = "x" * 65_536


def _refused_url() -> str:
    """A URL where nothing listens (a port bound, then released), for the close-code
    step to see a connection fail (close code 1006)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"

pytestmark = pytest.mark.browser


@pytest.fixture
def tools() -> tuple[str, str, str]:
    """node, npm and chromium, or skip (fail under CI) naming what is missing."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    found = {"node": shutil.which("node"), "npm": shutil.which("npm"), "chromium": chromium}
    missing = [name for name, path in found.items() if not path]
    if missing:
        reason = f"browser test needs {', '.join(missing)} (not found on PATH)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found["node"] or "", found["npm"] or "", found["chromium"] or ""


async def _npm_ci(npm: str, capsys: pytest.CaptureFixture[str]) -> None:
    if (HERE / "node_modules" / "playwright-core").is_dir():
        return
    with capsys.disabled():
        print("\ntests/browser: node_modules missing, running `npm ci` (once; takes a while)")
    proc = await trio.run_process(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_stdout=True,
        capture_stderr=True, check=False,
    )
    assert proc.returncode == 0, f"npm ci failed:\n{proc.stderr.decode(errors='replace')}"


def _make_bus() -> EventBus:
    # A small outbound queue, so that the flood below drops messages and sends GAP.
    # Rooms keep history (1,000 messages by default), small.* only 3, volatile.* none.
    bus = EventBus(open_rooms=True, send_queue_size=32,
                   history_rooms=["small.*=3/120", "volatile.*=off"])
    forbidden: set[str] = set()

    @bus.authorize_join
    def join_unless_forbidden(sock: Connection, room: str) -> bool:
        return room not in forbidden

    @bus.on("say")
    async def say(sock: Connection, data: dict[str, Any]) -> None:
        for text in data["texts"]:
            bus.emit("chat", text, to=data["room"])

    @bus.on("cut")
    async def cut(sock: Connection, data: dict[str, Any]) -> None:
        # The caller's TCP connection ends without a close frame (a network failure:
        # 1006 in the browser). Then, before anything can await (so before the client
        # can come back), rooms are forbidden and messages sent to rooms.
        sock._abort(1006, "cut by the test", by_server=False)
        forbidden.update(data.get("forbid", []))
        for room, texts in data.get("rooms", {}).items():
            for text in texts:
                bus.emit("chat", text, to=room)

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    @bus.on("slow", concurrency=8)
    async def slow(sock: Connection, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return "late"

    @bus.on("ask")
    async def ask(sock: Connection, data: dict[str, Any]) -> Any:
        # The client's error answer comes back as a RequestError, which answers
        # this request with the same code.
        return await sock.call(data["event"], data["data"], timeout=5)

    @bus.on("notify")
    async def notify(sock: Connection, data: Any) -> None:
        sock.emit("notice", data)

    @bus.on("kick")
    async def kick(sock: Connection, data: Any) -> None:
        sock.close(CloseCode.INTERNAL_ERROR, "kicked by the test")

    @bus.on("close_with")
    async def close_with(sock: Connection, code: int) -> None:
        sock.close(code, "closed by the test")

    @bus.on("flood")
    async def flood(sock: Connection, count: int) -> int:
        # Synchronous sends: the socket takes a frame or two, the queue 32, the rest
        # is dropped and reported to the client by GAP once the queue has room.
        for _ in range(count):
            sock.emit("tick", FLOOD_PAYLOAD, delivery=Delivery.VOLATILE)
        # The (reliable) answer must not find the queue full: that would close with 4001.
        for _ in range(1000):  # 10 s at most
            if not sock.statistics()["queued_messages"]:
                break
            await trio.sleep(0.01)
        return count

    return bus


async def _run_pages(node: str, chromium: str) -> tuple[dict[str, Any], str]:
    bus = _make_bus()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(50):
            proc = await trio.run_process(
                [node, str(HERE / "run.mjs"), f"http://127.0.0.1:{port}", _refused_url()],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "CHROMIUM": chromium},
            )
        nursery.cancel_scope.cancel()
    stdout = proc.stdout.decode(errors="replace")
    detail = f"run.mjs exit {proc.returncode}\nstderr:\n{proc.stderr.decode(errors='replace')}"
    assert proc.returncode == 0, f"{detail}\nstdout:\n{stdout}"
    result: dict[str, Any] = json.loads(stdout)
    detail += "\nconsole:\n" + "\n".join(result.get("console", []))
    if "failure" in result:
        # What the pages saw so far; the server's own log is in pytest's captured log.
        partial = json.dumps(result, ensure_ascii=False)[-6000:]
        pytest.fail(f"run.mjs: {result['failure']}\n{_dropped_again(result)}{detail}"
                    f"\nresult so far:\n{partial}")
    return result, detail


def _dropped_again(result: dict[str, Any]) -> str:
    """Say so when the server dropped page A's new connection after the reconnect."""
    disconnects = result.get("reconnect", {}).get("disconnects", [])
    if len(disconnects) < 2:
        return ""
    return (
        f"page A's connection closed again after reconnecting: {disconnects[1:]}; right after "
        "WELCOME the client sends its RESUME, then, once it is answered, its queued request "
        "(see the server's log for why it dropped them)\n"
    )


def _rejected(outcome: dict[str, Any], code: str) -> bool:
    return outcome["ok"] is False and outcome["code"] == code


# Chromium's start and `npm ci` take most of the time; the pages themselves take ~3 s.
@pytest.mark.timeout(180)
async def test_browser_client(
    tools: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    node, npm, chromium = tools
    await _npm_ci(npm, capsys)
    r, detail = await _run_pages(node, chromium)

    # Handshake: the negotiated subprotocol, WELCOME, connect() without a URL.
    a, b = r["welcomeA"], r["welcomeB"]
    assert a["same"], detail
    assert b["same"], detail
    assert a["protocol"] == "eventbus.v1.json", detail
    assert b["protocol"] == "eventbus.v1.msgpack", detail
    assert a["url"] == b["url"], detail
    assert a["sid"] != b["sid"], detail
    for welcome in (a, b):
        assert welcome["options"]["max_pending"] == 64
        assert welcome["options"]["ping_interval"] == 25_000

    # Rooms: every message reaches the other member once, never its sender, with the
    # position its publisher was acked.
    join_a, join_b = r["joinA"], r["joinB"]
    assert join_a["ok"], detail
    epoch = join_a["value"][0]
    assert join_b["value"] == [epoch, 0], detail
    acks = [r[f"pub{n}"] for n in (1, 2, 3, 4)]
    assert all(ack["ok"] for ack in acks), detail
    assert [ack["value"] for ack in acks] == [[epoch, n] for n in (1, 2, 3, 4)], detail
    assert [m["data"] for m in r["chatB"]] == [
        {"text": "one", "from": "A"}, {"text": "three", "from": "A"}], detail
    assert [m["data"] for m in r["chatA"]] == [
        {"text": "two", "from": "B"}, {"text": "four", "from": "B"}], detail
    assert [m["meta"] for m in r["chatB"]] == [
        {"event": "chat", "room": "lobby", "epoch": epoch, "seq": seq} for seq in (1, 3)]
    assert [m["meta"]["seq"] for m in r["chatA"]] == [2, 4], detail
    assert r["roomsA"] == {"lobby": [epoch, 4]}, detail

    # Binary data over msgpack comes back byte for byte, as Uint8Array.
    assert r["echoBinary"] == {"ok": True, "value": {"bytes": list(range(256))},
                               "ms": r["echoBinary"]["ms"]}, detail
    assert r["echoNested"]["value"] == {
        "blob": {"bytes": [0, 255, 128]}, "list": [1, 2.5, "é", None]}, detail
    assert r["echoIsUint8Array"] is True, detail
    # A binary room message cannot reach the JSON page: it gets `unencodable` instead
    # (an ERROR without ack id, reported through onerror), and its handler never runs.
    assert r["pubBinary"]["value"] == [epoch, 5], detail
    assert [e["code"] for e in r["errorsA"]] == ["unencodable"], detail
    assert r["blobA"] == [], detail
    # The JSON client refuses binary data and NaN itself; the connection is unharmed.
    assert r["echoBinaryOverJson"]["ok"] is False, detail
    assert r["echoBinaryOverJson"]["name"] == "TypeError", detail
    assert r["echoNaN"]["name"] == "TypeError", detail
    assert r["echoJson"]["value"] == {"x": 1, "s": "héllo ✓", "n": None}, detail

    # Request errors.
    assert _rejected(r["timeout"], "timeout"), detail
    assert 250 <= r["timeout"]["ms"] < 1500, detail
    assert _rejected(r["unknown"], "unknown_event"), detail
    assert _rejected(r["reserved"], "invalid_name"), detail

    # Server calls answered by the pages' handlers.
    assert _rejected(r["askA"], "forbidden"), detail
    assert r["askB"]["value"] == {
        "ok": True, "data": 2, "meta": {"event": "confirm", "room": None}}, detail
    assert _rejected(r["askCrash"], "internal_error"), detail
    assert _rejected(r["askNoHandler"], "unknown_event"), detail

    # A direct event; dropped volatile events are reported by GAP, none lost silently.
    assert r["notify"]["ok"], detail
    assert r["noticeA"] == [{"data": "hello", "meta": {"event": "notice", "room": None}}]
    assert r["flood"]["value"] == 300, detail
    flood = r["floodB"]
    assert flood["gaps"], detail
    assert all(gap["room"] is None for gap in flood["gaps"]), detail
    assert flood["ticks"] + sum(gap["count"] for gap in flood["gaps"]) == 300, detail

    # Ack ids wrap from 2^31-1 to 1 (ids 2^31-2, 2^31-1, 1, 2 were used) and skip ids
    # still pending.
    assert r["wrap"] == {"answers": [1, 2, 3, 4], "afterWrap": 2, "skipped": 3}, detail

    # Dropped connection: the pending call fails at once, not after its 8 s timeout;
    # then a reconnect with a new sid, the room joined again, the queued request sent.
    kick, again = r["kick"], r["reconnect"]
    assert _rejected(kick["call"], "disconnected"), detail
    assert kick["call"]["ms"] < 2000, detail
    assert again["disconnects"] == [
        {"code": 1011, "reason": "kicked by the test", "reconnect": True}
    ], _dropped_again(r) + detail
    assert again["sid"] != kick["sidBefore"], detail
    assert again["welcomes"] == [kick["sidBefore"], again["sid"]], detail
    assert len(again["reconnects"]) == 1, detail
    assert again["reconnects"][0]["sid"] == again["sid"], detail
    # The session was resumed. Seq 5 (binary) reached A as an unencodable ERROR and a
    # GAP, not a room event, so A asked for what followed seq 4: the server replayed seq
    # 5 in the same way (counted as replayed; the GAP tells A it is lost).
    assert again["reconnects"][0]["resumed"] is True, detail
    assert again["reconnects"][0]["rooms"] == {
        "lobby": {"recovered": True, "replayed": 1, "position": [epoch, 5]}}, detail
    assert again["queued"] == "queued while down", detail
    assert again["connected"] is True, detail
    assert r["pub5"]["ok"], detail
    assert r["chatAAfterReconnect"][-1]["data"] == {"text": "five", "from": "B"}, detail
    assert len(r["chatAAfterReconnect"]) == 3, detail

    # close(): for good, requests fail, one last disconnect without reconnect.
    closed = r["closed"]
    assert _rejected(closed["call"], "disconnected"), detail
    assert closed["closed"] is True, detail
    assert closed["connected"] is False, detail
    assert closed["disconnects"][-1]["code"] == 1000, detail
    assert closed["disconnects"][-1]["reconnect"] is False, detail
    assert r["leaveB"] == {"ok": True, "value": None, "ms": r["leaveB"]["ms"]}, detail
    assert r["roomsB"] == [], detail
    # Chromium logs each failed connection to the refused URL; those are expected.
    refused = f"WebSocket connection to '{r['refusedUrl']}' failed"
    errors = [line for line in r["console"]
              if "error" in line.split(":")[0] and refused not in line]
    assert not errors, detail

    # After each close code, the browser client reconnects or stops as the Python
    # client does (every code a server sends, and 1006 for no close frame).
    verdicts = {c["code"]: [d["reconnect"] for d in c["disconnects"]] for c in r["closeCodes"]}
    assert set(verdicts) == set(CloseCode) | {1006}, detail
    for outcome in r["closeCodes"]:
        code = outcome["code"]
        if code in NO_RECONNECT_CLOSE_CODES:
            assert verdicts[code] == [False], (code, detail)
            assert outcome["disconnects"][0]["reason"] == "closed by the test", (code, detail)
            assert outcome["closed"] is True, (code, detail)
            assert outcome["welcomes"] == 1, (code, detail)
            assert _rejected(outcome["after"], "disconnected"), (code, detail)
        elif code == 1006:  # a port nothing listens on: attempt after attempt
            # At least two, all reconnecting (a third may come before the page stops).
            assert len(verdicts[code]) >= 2, detail
            assert all(verdicts[code]), detail
            assert outcome["disconnects"][0]["code"] == 1006, detail
        else:
            assert verdicts[code] == [True], (code, detail)
            assert outcome["welcomes"] == 2, (code, detail)
            assert outcome["after"]["value"] == code, (code, detail)

    # Positions only move forward within an epoch, though the server wrote a room event
    # (seq 7, 9, 3) ahead of the ACK of an earlier position (6, 8, 2); a new epoch
    # replaces the position (e1 9, then e2 1, then e3 after the reconnect).
    assert r["positions"] == {
        "join": {"value": ["e1", 6], "room": ["e1", 7]},
        "publish": {"value": ["e1", 8], "room": ["e1", 9]},
        "newEpoch": ["e2", 1],
        "rejoin": ["e3", 3],
    }, detail

    _check_scripted_resume(r["scriptedResume"], detail)
    _check_scripted_bound(r["scriptedBound"], detail)
    for codec in ("json", "msgpack"):
        _check_recovered(r["resumeRecovered"][codec], codec, detail)
        _check_not_recovered(r["resumeNotRecovered"][codec], codec, detail)
    _check_publish_once(r["publishOnce"], detail)


def _outs(log: list[list[Any]]) -> list[list[Any]]:
    """The packets one connection of a RecordingSocket sent."""
    return [packet for way, packet in log if way == "out"]


def _index(log: list[list[Any]], way: str, match: Any) -> int:
    """Where in one connection's log the first packet going `way` that `match`es is."""
    return next(i for i, (w, packet) in enumerate(log) if w == way and match(packet))


def _check_scripted_resume(s: dict[str, Any], detail: str) -> None:
    """Verdicts of every kind, repeats dropped, the token chain, the fallback to JOIN
    and which held publishes are sent again (page.html scriptedResume)."""
    sent = s["sent"]
    first, second = s["reconnects"]
    # Connection 2: RESUME first, with connection 1's sid, token and positions.
    on2 = [packet for c, packet in sent if c == 2]
    assert on2[0] == [10, "scripted1", "t" * 43, {
        "lobby": ["e1", 4], "quiet": ["q1", 0], "gone": ["g1", 0], "far": ["f1", 0]},
        on2[0][4]], detail
    # Replayed repeats (seq 4 and 5 again) are dropped; $resume_token reaches no handler.
    assert s["chat"] == [{"data": "five", "seq": 5}], detail
    assert s["tokens"] == [], detail
    assert first == {"sid": "scripted2", "resumed": True, "rooms": {
        "lobby": {"recovered": True, "replayed": 1, "position": ["e1", 5]},
        "quiet": {"recovered": False, "reason": "history_off", "position": ["q2", 0]},
        "gone": {"recovered": False, "reason": "forbidden"},
        # Not joined by the server: joined again with JOIN, at that JOIN's position.
        "far": {"recovered": False, "reason": "unavailable", "extra": "ignored",
                "position": ["far2", 9]},
    }}, detail
    # After the RESUME's answer: the JOIN, then the publish in flight (same ack and
    # publish id), then the one held while down; not the one to the room without history.
    assert on2[1:4] == [[4, "far", 9], [6, "lobby", "chat", "sent again", 6, 2],
                        [6, "lobby", "chat", "held 1", 7, 3]], detail
    assert s["inFlight"]["quiet"]["code"] == "disconnected", detail
    assert "keeps no history" in s["inFlight"]["quiet"]["message"], detail
    assert s["inFlight"]["lobby"]["value"] == ["e1", 102], detail
    assert s["afterResume"]["session"] == {"sid": "scripted2", "token": "T" * 43}, detail
    # Not the ACKs of its own publishes (e1 102, 103): the events and verdicts it saw.
    assert s["afterResume"]["rooms"] == {
        "lobby": ["e1", 5], "quiet": ["q2", 0], "far": ["far2", 9]}, detail
    # Connection 3: RESUME with connection 2's sid and the token it was sent; refused,
    # so the rooms are joined again, then the publish held while down goes out; the one
    # in flight on connection 2 fails (a new session cannot know its publish id).
    on3 = [packet for c, packet in sent if c == 3]
    assert on3[0][:4] == [10, "scripted2", "T" * 43, s["afterResume"]["rooms"]], detail
    assert [p[:2] for p in on3[1:]] == [[4, "lobby"], [4, "quiet"], [4, "far"], [6, "lobby"]]
    assert on3[4][2:4] == ["chat", "held 2"], detail
    assert s["late"]["code"] == "disconnected", detail
    assert "could not be resumed" in s["late"]["message"], detail
    assert [q["value"] for q in s["queued"]] == [["e1", 103], ["e1", 105]], detail
    assert second == {"sid": "scripted3", "resumed": False, "rooms": {
        room: {"recovered": False, "reason": "resume_failed", "position": [f"{room}3", 9]}
        for room in ("lobby", "quiet", "far")}}, detail
    assert s["rooms"] == {room: [f"{room}3", 9] for room in ("lobby", "quiet", "far")}, detail
    assert s["closedSession"] is None, "the token is forgotten on close()"


def _check_scripted_bound(s: dict[str, Any], detail: str) -> None:
    """1,000 publishes in flight are held and sent again in order with their publish
    ids; the 1,001st, made while disconnected, is refused at once."""
    assert s["refused"]["code"] == "disconnected", detail
    assert "1000 publishes already wait" in s["refused"]["message"], detail
    assert s["first"] == list(range(1, 1001)), detail
    assert s["second"] == [*range(1, 1001), 1002], "publish ids are never reused"
    assert s["positions"] == list(range(1, 1001)), detail
    assert s["next"] == ["e", 1002], detail


def _check_recovered(s: dict[str, Any], codec: str, detail: str) -> None:
    """The real server drops the connection twice while messages are sent to the room:
    after each reconnect the page has exactly those, in order, once (page.html
    resumeRecovered)."""
    room = f"resume.{codec}"
    epoch = s["joined"][0]
    assert s["joined"] == [epoch, 0], detail
    assert s["own"] == [epoch, 3], detail
    assert s["before"] == [epoch, 2], "its own publish's ACK does not move its position"
    assert s["disconnects"] == [{"code": 1006, "reason": "", "reconnect": True}] * 2, detail
    # Seq 3 and 9 are its own publishes (before the cut, and held while down): never
    # sent to it, not even in the replay.
    texts = ["live 1", "live 2", *(f"missed {n}" for n in range(1, 6)), "after",
             "missed 6", "missed 7", "after again"]
    seqs = [1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert s["chat"] == [{"data": text, "room": room, "seq": seq}
                         for text, seq in zip(texts, seqs, strict=True)], detail
    welcomes = s["welcomes"]
    assert [r["sid"] for r in s["reconnects"]] == welcomes[1:], detail
    assert [r["rooms"] for r in s["reconnects"]] == [
        {room: {"recovered": True, "replayed": 5, "position": [epoch, 8]}},
        {room: {"recovered": True, "replayed": 2, "position": [epoch, 12]}},
    ], detail
    assert all(r["resumed"] for r in s["reconnects"]), detail
    assert s["first"]["held"]["value"] == [epoch, 9], detail
    assert s["first"]["queued"]["value"] == "queued while down", detail
    assert s["rooms"] == {room: [epoch, 13]}, detail
    assert s["tokens"] == [], "$resume_token reaches no handler"
    assert s["errors"] == [], detail
    one, two, three = s["connections"]
    welcome_token = one[0][1][2]
    # Each RESUME is its connection's first request: the previous connection's sid, the
    # last token it got (WELCOME's, then $resume_token's), the last position seen.
    assert _outs(two)[0][:4] == [10, welcomes[0], welcome_token, {room: [epoch, 2]}], detail
    fresh = [packet[2] for way, packet in two if way == "in" and packet[:2] == [2, "$resume_token"]]
    assert len(fresh) == 1, detail
    assert _outs(three)[0][:4] == [10, welcomes[1], fresh[0], {room: [epoch, 10]}], detail
    # What the page asked for while down goes out after the RESUME's answer.
    resume_id = _outs(two)[0][4]
    answered = _index(two, "in", lambda p: p[:2] == [7, resume_id])
    held = _index(two, "out", lambda p: p[0] == 6)
    queued = _index(two, "out", lambda p: p[:2] == [1, "echo"])
    assert answered < held < queued, detail
    assert _outs(two)[1][3:] == ["held while down", _outs(two)[1][4], 2], "publish id 2"


def _check_not_recovered(s: dict[str, Any], codec: str, detail: str) -> None:
    """A history window exceeded, a room without history, a room now forbidden: the
    verdicts say so, and nothing of what was missed is delivered (resumeNotRecovered)."""
    small, volatile, secret = (f"{kind}.{codec}" for kind in ("small", "volatile", "secret"))
    [reconnect] = s["reconnects"]
    assert reconnect["resumed"] is True, detail
    rooms = reconnect["rooms"]
    epoch = s["joined"][small][0]
    assert rooms[small] == {"recovered": False, "reason": "window_exceeded",
                            "position": [epoch, 5]}, detail
    assert rooms[volatile]["recovered"] is False, detail
    assert rooms[volatile]["reason"] == "history_off", detail
    assert rooms[volatile]["position"] == s["rooms"][volatile], detail
    assert rooms[secret] == {"recovered": False, "reason": "forbidden"}, detail
    assert set(s["rooms"]) == {small, volatile}, "the forbidden room is dropped"
    assert s["rooms"][small] == [epoch, 5], detail
    # Never a part of what was missed; the next live message arrives.
    assert s["chat"] == [{"data": "after", "room": small, "seq": 6}], detail
    # The publish in flight to the room without history is not sent again.
    assert s["inFlight"]["code"] == "disconnected", detail
    assert "keeps no history" in s["inFlight"]["message"], detail
    assert not [p for p in _outs(s["connections"][1]) if p[0] == 6], detail


def _check_publish_once(s: dict[str, Any], detail: str) -> None:
    """The answer of a publish is lost with its connection: sent again after the
    RESUME with the same publish id, applied once (publishOnce)."""
    one, two = s["connections"]
    [lost] = [packet for way, packet in one if way == "lost"]
    epoch = lost[2][0]
    assert s["first"]["value"] == lost[2] == [epoch, 1], "the first's position"
    assert s["second"]["value"] == [epoch, 2], detail
    assert s["orders"] == [{"data": {"n": 1}, "seq": 1}, {"data": {"n": 2}, "seq": 2}], detail
    before, again = [p for p in _outs(one) + _outs(two) if p[0] == 6 and p[3] == {"n": 1}]
    assert again[5] == before[5] == 1, "the same publish id"
    assert _outs(two)[0][0] == 10, "after the RESUME"
    assert s["reconnects"] == [{"sid": s["reconnects"][0]["sid"], "resumed": True,
                                "rooms": {}}], detail
