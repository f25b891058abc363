"""Running the daemon: uvicorn around ``create_app`` with a graceful shutdown.

uvicorn handles SIGTERM / SIGINT: it stops accepting, lets in-flight requests finish
(their batches are acknowledged only once durable), then runs the app's lifespan exit,
which drains the projector and closes the log and the store.  A second Ctrl+C forces
the exit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn

from adaptd.daemon.config import ConfigError, Settings
from adaptd.daemon.http.app import create_app
from adaptd.daemon.runtime import Runtime


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond loopback without tenant tokens.

    Raises:
        ConfigError: ``host`` is not loopback and no tenant has a token.
    """
    if not settings.is_loopback and not settings.token_map():
        raise ConfigError(
            f"refusing to bind {settings.host} without bearer tokens: add a [[tenants]] entry"
            " with tokens to the config, or bind 127.0.0.1"
        )


def bind(settings: Settings) -> socket.socket:
    """A socket bound to ``settings.host:port`` for uvicorn to listen on.

    Bound before anything else opens, so a busy port is one clear error instead of
    uvicorn's log line and exit code.

    Raises:
        ConfigError: the port is in use, or the address cannot be bound (the message
            says which and what to change).
    """
    host, port = settings.host, settings.port
    # The family as uvicorn picks it: a name such as "localhost" binds its IPv4 address.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: reuse a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:  # (socket.gaierror too: a host name that does not resolve)
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another adaptd, or another program):"
                              " stop it or pass another --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}: fix --host / --port") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM / SIGINT.

    uvicorn re-raises the captured signal once it has shut down, so the process would
    die by that signal; a drained, committed shutdown is a success and says so.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_server(settings: Settings, runtime: Runtime | None = None) -> uvicorn.Server:
    """A uvicorn server for ``settings`` (not started); it closes ``runtime`` at shutdown."""
    check_bind(settings)
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_timeout_s)),
        lifespan="on",
    )
    return _Server(config)


def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM / SIGINT; return the process exit code."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_bind(settings)
    sock = bind(settings)
    try:
        # Opened before uvicorn so that a locked or unreadable data dir is one clear error.
        runtime = Runtime(settings)
        try:
            server = build_server(settings, runtime)
            server.run(sockets=[sock])
        finally:
            runtime.close()  # idempotent: a normal shutdown already closed it in the lifespan
    finally:
        sock.close()
    # uvicorn reports a failed startup (port in use) by not starting.
    return 0 if server.started else 1
