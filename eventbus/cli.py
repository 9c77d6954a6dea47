"""The ``eventbus`` command: ``eventbus serve`` runs a bus (the built-in demo by
default); the client tools ``listen``, ``publish`` and ``call`` talk to a running one.

Exit status of the client tools: 0 success, 1 a runtime failure (connection refused
or lost, handshake rejected, an error answer, a timeout), 2 a usage error (bad
arguments, a bad URL, JSON_DATA that is not JSON), 130 interrupted (Ctrl-C).

Exit status of ``serve``: 0 stopped by SIGTERM (after the graceful shutdown), 1 it
cannot listen (the port is in use, say), 2 a usage error or an app that cannot be
loaded, 130 stopped by Ctrl-C (SIGINT). 130 is 128 + SIGINT, what a shell reports
for a program that Ctrl-C ended; a service manager's SIGTERM is the normal way to
stop a server, so that ends with 0. Every failure is one line on stderr, not a
traceback (``--log-level debug`` adds the traceback of an app that cannot be
loaded).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import ssl
import sys
import sysconfig
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from . import __version__
from .client import Recovery, connect
from .client.transport import check_url, collapse_groups
from .errors import CallTimeout, ConnectionClosed, HandshakeRejected, RequestError
from .logformat import configure_logging
from .server import EventBus
from .settings import Settings, SettingsError, add_arguments
from .settings import load as load_settings

__all__ = ["AppError", "build_parser", "load_app", "main"]

logger = logging.getLogger("eventbus.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus", description="A WebSocket event bus with rooms and acknowledgments."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run a bus (the built-in demo when no app is given)",
        description="Serve APP, module:attribute (an EventBus, or a function returning "
        "one), or the built-in demo: open rooms and an 'echo' event. Each setting is a "
        "flag, an EVENTBUS_* environment variable (EVENTBUS_PORT, EVENTBUS_PING_INTERVAL) "
        "and a key of a TOML config file ([serve] port, [bus] ping_interval); a flag wins "
        "over the environment, the environment over the file, the file over the app's "
        "own settings. The first Ctrl-C (SIGINT) or SIGTERM shuts down gracefully, the "
        "second at once.",
        epilog="Exit status: 0 stopped by SIGTERM (or --print-config), 1 cannot listen, 2 "
        "usage error, a bad setting or an app that cannot be loaded, 130 stopped by "
        "Ctrl-C.",
    )
    # Every setting (the command's own and ServerConfig's) is a flag; see settings.py.
    add_arguments(serve)
    serve.add_argument("--print-config", action="store_true",
                       help="print the effective settings as a TOML config file, each "
                       "with where it came from, and exit (default: serve)")
    # A worker of --workers: listen with SO_REUSEPORT beside the others.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)
    _add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the workers of `serve --workers`
    status: int = args.run(args)
    return status


class AppError(Exception):
    """The app named on the command line cannot be loaded; the message says why
    (and for an error in the app's code, where) in one line."""


def load_app(spec: str) -> EventBus:
    """Import ``module:attribute``; call it if it is a factory.

    Raises:
        AppError: the spec is malformed or names nothing; the module, or a module
            it imports, is missing or raised while importing (a ``SyntaxError``
            too); the factory raised; or what it names is not an EventBus. The
            original exception is the ``__cause__``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppError(f"app must look like module:attribute, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise AppError(f"no module named {exc.name!r} (looked in the current "
                           "directory and on sys.path)") from exc
        raise AppError(f"cannot import {module_name}: {_located(exc)}") from exc
    except Exception as exc:
        raise AppError(f"cannot import {module_name}: {_located(exc)}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(app) and not isinstance(app, EventBus):
        try:
            app = app()
        except Exception as exc:
            raise AppError(f"{spec}() failed: {_located(exc)}") from exc
    if not isinstance(app, EventBus):
        raise AppError(f"{spec} is a {type(app).__name__}, not an EventBus")
    return app


def _located(exc: BaseException) -> str:
    """``file:line: Type: message`` for an exception from the app's code.

    The line is the innermost one of the app's own code, not of the standard
    library, installed packages or eventbus, which it may have called: that is
    where its author can act. A SyntaxError names its own place.
    """
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename is not None:
        text = f"{type(exc).__name__}: {exc.msg}"
        return f"{_path(exc.filename)}:{exc.lineno}: {text}"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<") and Path(frame.filename) != Path(__file__)]
    own = [frame for frame in frames if not _is_library(frame.filename)] or frames
    if not own:
        return text
    return f"{_path(own[-1].filename)}:{own[-1].lineno}: {text}"


#: Where the standard library, installed packages and eventbus itself live.
_LIBRARY_DIRS = tuple(
    {str(Path(sysconfig.get_path(name)).resolve())
     for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    | {str(Path(__file__).resolve().parent)}
)


def _is_library(filename: str) -> bool:
    path = str(Path(filename).resolve())
    return any(path == root or path.startswith(root + os.sep) for root in _LIBRARY_DIRS)


def _path(filename: str) -> str:
    """``filename`` relative to the current directory when it is inside it."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


class _CannotListen(Exception):
    """Opening the listening sockets failed; the message says why in one line."""


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args, os.environ)
    except SettingsError as exc:
        print(f"eventbus serve: {exc}", file=sys.stderr)
        return 2
    options = settings.options
    configure_logging(options.log_level, options.log_format)
    if options.workers != 1 and not args.print_config:
        return _serve_workers(args, settings)
    bus = _load_bus(options.app)
    if bus is None:
        return 2
    try:
        config, sources = settings.bus_config(bus.config)
    except SettingsError as exc:
        print(f"eventbus serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(settings.render(sources))
        return 0
    if config != bus.config:
        bus.reconfigure(config)
    if options.redis is not None:
        try:
            from .adapters.redis import RedisAdapter
        except ImportError:
            print("eventbus serve: --redis needs the redis extra: "
                  "pip install 'eventbus[redis]'", file=sys.stderr)
            return 2
        try:
            bus.use_adapter(RedisAdapter(options.redis, prefix=options.redis_prefix))
        except ValueError as exc:
            print(f"eventbus serve: {settings.serve['redis'].describe()}: {exc}",
                  file=sys.stderr)
            return 2
    context = None
    if options.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.certfile, options.keyfile)
    elif options.keyfile:
        print("eventbus serve: --keyfile needs --certfile", file=sys.stderr)
        return 2
    try:
        # trio's nurseries wrap what they raise in exception groups: take out a lone
        # exception, so that the one we expect can be caught (any other group stays).
        with collapse_groups():
            stopped_by = trio.run(_run, bus, options.host, options.port, context,
                                  args.reuse_port)
    except _CannotListen as exc:
        print(f"eventbus serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while no signal receiver was open
        return 130
    return 130 if stopped_by == signal.SIGINT else 0


def _load_bus(app: str | None) -> EventBus | None:
    """The app's bus, or the demo's; ``None`` (said on stderr) if it cannot load."""
    if app is None:
        from .demo import make_demo_bus

        logger.info("no app given: serving the built-in demo (open rooms: any client may "
                    "join and publish to any room; 'echo' answers with its data)")
        return make_demo_bus()
    sys.path.insert(0, ".")
    try:
        return load_app(app)
    except AppError as exc:
        if exc.__cause__ is not None and logger.isEnabledFor(logging.DEBUG):
            traceback.print_exception(exc.__cause__)
        print(f"eventbus serve: {exc}", file=sys.stderr)
        return None


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """``--workers N``: supervise N worker processes (see eventbus.workers)."""
    options = settings.options
    if options.redis is None:
        print("eventbus serve: --workers above 1 needs --redis: the workers are separate "
              "processes, and share rooms only through Redis", file=sys.stderr)
        return 2
    if options.port == 0:
        print("eventbus serve: --workers needs a fixed --port (with 0, each worker would "
              "listen on a port of its own)", file=sys.stderr)
        return 2
    from .workers import supervise

    # Each worker reads the same flags, environment and file as this process (their
    # secrets stay out of the process list), as one worker beside the others.
    serve_argv = args.argv[args.argv.index("serve") + 1:]
    logger.info("starting %d workers on port %d, joined through %s", options.workers,
                options.port, _redacted(options.redis))
    return trio.run(supervise, options.workers,
                    [*serve_argv, "--workers", "1", "--reuse-port"])


def _redacted(url: str) -> str:
    """``url`` without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=netloc[0].partition(":")[0] + ":***@" + netloc[2]))


async def _run(
    bus: EventBus, host: str, port: int, context: ssl.SSLContext | None,
    reuse_port: bool = False,
) -> signal.Signals | None:
    """Serve until a graceful shutdown ends; returns the signal that asked for it."""
    stopped_by: signal.Signals | None = None
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]]) -> None:
            await bus.serve(host, port, ssl_context=context, reuse_port=reuse_port,
                            task_status=task_status)
            nursery.cancel_scope.cancel()  # a graceful shutdown has finished

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                with collapse_groups():
                    listeners = await nursery.start(serve)
            except OSError as exc:
                raise _CannotListen(f"cannot listen on {host}:{port}: "
                                    f"{exc.strerror or exc}") from exc
            scheme = "wss" if context else "ws"
            for url in _urls(scheme, listeners):
                logger.info("listening on %s (health check: /health)", url)
            async for signum in signals:
                stopped_by = signal.Signals(signum)
                if bus.draining:
                    logger.warning("second %s: stopping now", stopped_by.name)
                    nursery.cancel_scope.cancel()
                    break
                logger.info("%s: shutting down gracefully (again to stop now)", stopped_by.name)
                bus.shutdown()
    return stopped_by


def _urls(scheme: str, listeners: list[trio.abc.Listener[Any]]) -> list[str]:
    """The URL of each listener, with the port it got (``--port 0`` picks one)."""
    urls = []
    for listener in listeners:
        while isinstance(listener, trio.SSLListener):
            listener = listener.transport_listener
        assert isinstance(listener, trio.SocketListener)
        address, port = listener.socket.getsockname()[:2]
        host = f"[{address}]" if ":" in address else address
        urls.append(f"{scheme}://{host}:{port}/")
    return urls


# --- the client tools: listen, publish, call ---------------------------------------------

_CLIENT_EPILOG = """\
Binary data (msgpack only) is printed as {"$binary": "<hex>"}; a map sent with the
single key "$binary" looks the same. Exit status: 0 success, 1 runtime failure
(connection refused or lost, handshake rejected, error answer, timeout), 2 usage
error (bad arguments, URL or JSON_DATA), 130 interrupted."""


def _add_client_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("url", metavar="URL", type=_ws_url, help="ws:// or wss:// URL of the bus")
    common.add_argument("--codec", choices=["json", "msgpack"], default="json",
                        help="wire encoding; msgpack carries binary data "
                        "(default: %(default)s)")
    common.add_argument("-H", "--header", action="append", default=[], type=_header,
                        metavar="'NAME: VALUE'",
                        help="extra handshake header, repeatable (default: none)")
    layout = {"formatter_class": argparse.RawDescriptionHelpFormatter, "epilog": _CLIENT_EPILOG}

    listen = commands.add_parser(
        "listen", parents=[common], help="join rooms and print their events as JSON lines",
        description="Join the rooms and print each event as one JSON line\n"
        '{"room": ..., "event": ..., "data": ...}, flushed at once. Reconnects when the\n'
        "connection is lost and resumes (the server replays what it missed; a room\n"
        "it cannot recover is said on stderr); runs until interrupted.", **layout,
    )
    listen.add_argument("rooms", metavar="ROOM", nargs="+", help="room to join")
    listen.set_defaults(run=_client_command(_listen))

    publish = commands.add_parser(
        "publish", parents=[common], help="publish one event to a room",
        description="Publish an event to every member of ROOM but this client, and exit\n"
        "once the server acknowledged it; on an error answer, print\n"
        "'error: [code] message' to stderr.",
        **layout,
    )
    publish.add_argument("room", metavar="ROOM")
    publish.add_argument("event", metavar="EVENT")
    publish.add_argument("data", metavar="JSON_DATA", type=_json_value, help="the data, as JSON")
    publish.add_argument("--timeout", type=float, default=10.0,
                         help="seconds to wait for the acknowledgment (default: %(default)g)")
    publish.set_defaults(run=_client_command(_publish))

    call = commands.add_parser(
        "call", parents=[common], help="call a server event and print its answer",
        description="Send EVENT with JSON_DATA to the server's handler and print its\n"
        "answer as one JSON line.", **layout,
    )
    call.add_argument("event", metavar="EVENT")
    call.add_argument("data", metavar="JSON_DATA", type=_json_value, help="the data, as JSON")
    call.add_argument("--timeout", type=float, default=10.0,
                      help="seconds to wait for the answer (default: %(default)g)")
    call.set_defaults(run=_client_command(_call))


def _ws_url(value: str) -> str:
    try:
        check_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _header(value: str) -> tuple[str, str]:
    name, colon, content = value.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"a header looks like 'Name: value', not {value!r}")
    return name.strip(), content.strip()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_value(value: str) -> Any:
    try:
        return json.loads(value, parse_constant=_no_constant)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    """Data as JSON can print it: bytes become {"$binary": hex}."""
    if isinstance(value, bytes):
        return {"$binary": value.hex()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), ensure_ascii=False), flush=True)


def _client_command(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            trio.run(command, args)
        except KeyboardInterrupt:
            return 130
        except HandshakeRejected as exc:
            print(f"error: handshake rejected: {exc}", file=sys.stderr)
            return 1
        except (RequestError, CallTimeout, ConnectionClosed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


async def _listen(args: argparse.Namespace) -> None:
    logging.basicConfig(level="WARNING", format="eventbus listen: %(message)s")
    rooms = ", ".join(args.rooms)
    async with connect(args.url, codec=args.codec, headers=args.header) as client:

        @client.on_resume
        def resumed(recoveries: Mapping[str, Recovery]) -> None:
            for room, recovery in sorted(recoveries.items()):
                if recovery.recovered:
                    what = f"recovered, {recovery.replayed} missed messages replayed"
                else:
                    what = f"NOT recovered ({recovery.reason}): messages may be missing"
                print(f"eventbus listen: room {room}: {what}", file=sys.stderr, flush=True)

        @client.on_reconnect
        def reconnected() -> None:
            print(f"eventbus listen: reconnected, in {rooms}", file=sys.stderr, flush=True)

        async with client.subscribe(*args.rooms) as events:
            print(f"eventbus listen: joined {rooms}", file=sys.stderr, flush=True)
            async for event in events:
                _print_json({"room": event.room, "event": event.event, "data": event.data})


async def _publish(args: argparse.Namespace) -> None:
    async with connect(args.url, codec=args.codec, headers=args.header,
                       reconnect=False) as client:
        await client.publish(args.room, args.event, args.data, timeout=args.timeout)


async def _call(args: argparse.Namespace) -> None:
    async with connect(args.url, codec=args.codec, headers=args.header,
                       reconnect=False) as client:
        _print_json(await client.call(args.event, args.data, timeout=args.timeout))
