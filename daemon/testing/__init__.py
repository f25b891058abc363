"""Running a real daemon from tests, benchmarks and the demo: one harness.

- ``DaemonProcess``: ``adaptd up`` in a subprocess on a free loopback port (kill -9,
  restarts on the same port, its log kept beside the data dir).
- ``InProcessDaemon``: the same app served by uvicorn in a thread of this process, for
  API tests that need no process boundary.
- ``MemoryLog``: an in-memory ``StreamLog`` for projector and replay tests.
- ``free_port``, ``wait_until``: the waits every one of them needs.
"""

from __future__ import annotations

from adaptd.daemon.testing.inprocess import InProcessDaemon
from adaptd.daemon.testing.memory_log import MemoryLog
from adaptd.daemon.testing.process import DaemonError, DaemonProcess, free_port, wait_until

__all__ = ["DaemonError", "DaemonProcess", "InProcessDaemon", "MemoryLog", "free_port", "wait_until"]
