"""The parts of the ``eventbus`` command that tests/test_cli.py and
tests/server/test_cli_serve.py leave out: ``listen`` until it is interrupted
(binary data, a reconnect, Ctrl-C's exit status 130), a factory as the app,
``serve`` over TLS, and a second signal during a graceful shutdown.

Real processes (``python -m eventbus``) stop by SIGINT or SIGTERM, never SIGKILL
unless a test has already failed, so that they exit as a user's would (and their
coverage data is saved). Servers listen on 127.0.0.1, port 0 or a free port; every
test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

import eventbus
from eventbus import EventBus
from eventbus.cli import load_app, main

from .client.conftest import make_bus, serving

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Lines:
    """Reads the lines of a subprocess pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError("\n".join(self.seen) + self.buffer.decode())
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.seen.append(line.decode())
        return self.seen[-1]

    async def until(self, text: str) -> str:
        """The next line containing ``text``."""
        while text not in (line := await self.next()):
            pass
        return line


@asynccontextmanager
async def eventbus_process(*argv: str, cwd: Path | None = None) -> AsyncIterator[trio.Process]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "eventbus", *argv], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()  # only after a failure: a passing test stopped it
        with trio.CancelScope(shield=True):
            await process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- listen -----------------------------------------------------------------------------


async def test_listen_prints_binary_data_resumes_after_a_restart_and_exits_130_on_ctrl_c(
) -> None:
    with trio.fail_after(30):
        async with serving(make_bus()) as server, \
                eventbus_process("listen", server.url, "news", "--codec", "msgpack") as process:
            status, out = Lines(process.stderr), Lines(process.stdout)
            assert await status.next() == "eventbus listen: joined news"
            async with eventbus.connect(server.url, codec="msgpack") as publisher:
                await publisher.publish("news", "photo", b"\xff\xd8")
            assert json.loads(await out.next()) == {
                "room": "news", "event": "photo", "data": {"$binary": "ffd8"},
            }
            await server.stop()
            await server.start()  # the same port, the same bus: its history is still there
            assert await status.until("room news") == (
                "eventbus listen: room news: recovered, 0 missed messages replayed")
            assert await status.until("reconnected") == (
                "eventbus listen: reconnected, in news")
            await server.stop()
            await server.start(make_bus())  # a new bus: another secret, another history
            assert await status.until("room news") == (
                "eventbus listen: room news: NOT recovered (resume_failed): messages may be"
                " missing")
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130


# --- serve ------------------------------------------------------------------------------


def test_an_app_factory_is_called_for_the_bus() -> None:
    bus = load_app("eventbus.demo:make_demo_bus")
    assert isinstance(bus, EventBus)
    assert bus.config.open_rooms


def test_serve_keyfile_without_certfile_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--keyfile", "key.pem"]) == 2
    assert capsys.readouterr().err == "eventbus serve: --keyfile needs --certfile\n"


async def test_serve_with_a_certificate_serves_wss(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    port = free_port()
    with trio.fail_after(30):
        async with eventbus_process("serve", "--port", str(port), "--certfile", str(certfile),
                                    "--keyfile", str(keyfile)) as process:
            log = Lines(process.stderr)
            assert f"wss://127.0.0.1:{port}/" in await log.until("listening on")
            async with eventbus.connect(f"wss://127.0.0.1:{port}/", reconnect=False,
                                        ssl_context=client_context) as client:
                assert await client.call("echo", {"over": "tls"}) == {"over": "tls"}
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0


APP = '''\
import sys

import trio

from eventbus import EventBus

bus = EventBus(open_rooms=True)


@bus.on("never")
async def never(sock, data):
    print("never: started", file=sys.stderr, flush=True)
    await trio.sleep_forever()
'''


async def test_a_second_sigterm_stops_a_graceful_shutdown_at_once(tmp_path: Path) -> None:
    (tmp_path / "hanging.py").write_text(APP)
    port = free_port()
    with trio.fail_after(30):
        async with eventbus_process("serve", "hanging:bus", "--port", str(port),
                                    cwd=tmp_path) as process:
            log = Lines(process.stderr)
            await log.until("listening on")
            async with eventbus.connect(f"ws://127.0.0.1:{port}/", reconnect=False) as client:
                await client.emit("never")
                await log.until("never: started")
                process.send_signal(signal.SIGTERM)
                await log.until("shutting down gracefully")
                # The handler never finishes: the drain would last drain_timeout (10 s).
                process.send_signal(signal.SIGTERM)
                assert "second SIGTERM: stopping now" in await log.until("second SIGTERM")
                assert await process.wait() == 0
