"""A real ``adaptd up`` subprocess for benchmarks: start, wait until healthy, measure, end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from adaptd.daemon.testing import DaemonProcess

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` in MiB (the kernel's peak resident set size); NaN if unknown."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, worker: Callable[[], None], connections: int, start: float) -> tuple[float, float, dict]:
    """Run ``worker`` on ``connections`` threads, then wait until the projector caught up.

    Returns:
        Seconds from ``start`` (a ``time.perf_counter()``) until every worker returned
        (acked) and until the projector reached the log's end (projected), and the
        daemon's last ``/v1/stats``.

    Raises:
        SystemExit: the projector did not catch up within 30 minutes.
    """
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked = time.perf_counter() - start
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            stats = client.get("/v1/stats").json()
            if stats["projector_lag"] == 0 and stats["projector_position"] >= stats["log_end_offset"]:
                return acked, time.perf_counter() - start, stats
            if time.perf_counter() - start > 1800:
                raise SystemExit("projector did not catch up in 30 min")
            time.sleep(0.05)


@contextlib.contextmanager
def daemon(fsync: str = "batch", prefix: str = "adaptd-bench-", timeout: float = 60) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run a daemon in a fresh data directory; yields ``(process, base_url)`` once healthy.

    Raises:
        DaemonError: the daemon exited or did not answer ``/v1/health`` within ``timeout`` seconds.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    proc = DaemonProcess(root / "data", env={"ADAPTD_LOG__FSYNC": fsync, "ADAPTD_LOG_LEVEL": "warning"}, cwd=REPO)
    try:
        proc.start(timeout=timeout)
        assert proc.proc is not None
        yield proc.proc, proc.url
    finally:
        proc.stop(timeout=120)
        shutil.rmtree(root, ignore_errors=True)
