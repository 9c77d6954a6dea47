"""The ``eventbus`` command: ``eventbus serve`` runs a bus (the built-in demo by
default); the client tools talk to a running one."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

import trio

from .server import EventBus

__all__ = ["build_parser", "main"]

logger = logging.getLogger("eventbus.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus", description="A WebSocket event bus with rooms and acknowledgments."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run a bus (the built-in demo when no app is given)",
        description="Serve MODULE:ATTR (an EventBus, or a function returning one), or the "
        "built-in demo: open rooms and an 'echo' event.",
    )
    serve.add_argument("app", nargs="?", help="the app to serve, as module:attribute")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on")
    serve.add_argument("--certfile", help="TLS certificate (PEM) to serve wss://")
    serve.add_argument("--keyfile", help="TLS private key (PEM)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def load_app(spec: str) -> EventBus:
    """Import ``module:attribute``; call it if it is a factory.

    Raises:
        ValueError: the spec is malformed or names nothing.
        TypeError: the spec names something that is not an EventBus.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app must look like module:attribute, not {spec!r}")
    module = importlib.import_module(module_name)
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(app) and not isinstance(app, EventBus):
        app = app()
    if not isinstance(app, EventBus):
        raise TypeError(f"{spec} is a {type(app).__name__}, not an EventBus")
    return app


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.app is None:
        from .demo import make_demo_bus

        bus = make_demo_bus()
        logger.info("no app given: serving the built-in demo (open rooms: any client may "
                    "join and publish to any room; 'echo' answers with its data)")
    else:
        sys.path.insert(0, ".")
        try:
            bus = load_app(args.app)
        except (ImportError, ValueError, TypeError) as exc:
            print(f"eventbus serve: {exc}", file=sys.stderr)
            return 2
    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    elif args.keyfile:
        print("eventbus serve: --keyfile needs --certfile", file=sys.stderr)
        return 2
    try:
        trio.run(_run, bus, args.host, args.port, context)
    except OSError as exc:
        print(f"eventbus serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(bus: EventBus, host: str, port: int, context: ssl.SSLContext | None) -> None:
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[object]) -> None:
            await bus.serve(host, port, ssl_context=context, task_status=task_status)
            nursery.cancel_scope.cancel()  # a graceful shutdown has finished

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(serve)
            scheme = "wss" if context else "ws"
            logger.info("listening on %s://%s:%d/ (health check: /health)", scheme, host, port)
            async for signum in signals:
                name = signal.Signals(signum).name
                if bus.draining:
                    logger.warning("second %s: stopping now", name)
                    nursery.cancel_scope.cancel()
                    return
                logger.info("%s: shutting down gracefully (again to stop now)", name)
                bus.shutdown()
