"""The daemon's app served by uvicorn in a thread of this process (as uvicorn's own tests do).

For API tests that need a real HTTP server and a real runtime (log, DuckDB, processors)
but no process boundary: starting takes the runtime's open time, not an interpreter's.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from adaptd.daemon.config import Settings
from adaptd.daemon.http.app import create_app
from adaptd.daemon.runtime import Runtime


class InProcessDaemon:
    """``create_app(settings)`` on a free 127.0.0.1 port; ``with`` starts and stops it.

    The app's lifespan opens the runtime at start and closes it (draining the projector)
    at stop, as ``adaptd up`` does.  ``settings.port`` is ignored: the OS picks the port.
    """

    def __init__(self, settings: Settings, *, start_timeout: float = 30.0) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self.app = create_app(settings)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                     access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name="adaptd-inprocess", daemon=True)

    @property
    def url(self) -> str:
        sock = self._server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    @property
    def runtime(self) -> Runtime:
        """The app's runtime (available once started)."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    def start(self) -> InProcessDaemon:
        """Serve in a thread; return once listening.

        Raises:
            RuntimeError: the server did not start within ``start_timeout`` (its thread
                died, e.g. the runtime refused to open: see the logged error).
        """
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the in-process daemon did not start (see the log for the runtime's error)")
            time.sleep(0.01)  # a thread starting: there is no event to wait on
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (graceful: lifespan shutdown runs) and join its thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> InProcessDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
