"""Dashboard benchmark: start-up time, and the time to apply one update with 1,000 routes
while the live tail carries 10 events/s.

- **start-up**: from ``Popen`` of a fresh ``python`` process to the first screen rendered
  with the daemon's data (the child marks the moment after the first refresh painted
  and exits); the daemon is the recorded one of the tests (``tests/dash_server.py``).
- **update**: in one headless app on the routes screen, showing 1,000 routes (100
  programs × 10) served by a recorded daemon that also streams 10 events/s: the time
  from a refresh's message arriving to the screen repainted, for a refresh where 10
  routes' figures changed.  Peer: the same update applied by rebuilding the plain
  DataTable (``clear()`` then every row), i.e. without the keyed-cell diff.

Targets (issue 7): start <= 1.5 s, update <= 50 ms.

Usage: ``.venv/bin/python bench/dash_bench.py [--runs 10] [--updates 60] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dash_server import RecordedDaemon, load  # noqa: E402

ALPHA = 0.0099
T0 = "2026-11-22T08:00:00+00:00"


def synthetic(programs: int = 100, routes: int = 10, bump: int = 0, changed: int = 10) -> dict[str, Any]:
    """Recorded answers for ``programs`` × ``routes`` routes, one closed window each; the
    first ``changed`` routes' counts depend on ``bump`` (so successive bumps differ)."""
    tables, windows = [], []
    n = 0
    for p in range(programs):
        program = f"program-{p:03d}"
        rs = []
        for r in range(routes):
            route = f"route-{r:02d}"
            extra = bump if n < changed else 0
            rs.append({"name": route, "model": f"model-{r}", "weight": round(1 / routes, 4), "breaker": "closed",
                       "pinned": False, "canary": False, "params": {}, "api_base": None})
            windows.append({"window_start": T0, "window_end": "2026-11-22T08:01:00+00:00", "window_size": "1m",
                            "program": program, "route": route, "model": f"model-{r}", "module": None,
                            "count": 100 + extra, "errors": (n + extra) % 7, "cost_usd": 0.01 * (r + 1),
                            "latency_n": 100, "p50_ms": 100.0 + r, "p95_ms": 200.0 + r, "quality_n": 10,
                            "quality_mean": 0.8,
                            "sketch": {"alpha": ALPHA, "zero": 0, "index": list(range(460 + r, 480 + r)),
                                       "count": [5] * 19 + [5 + extra]}})
            n += 1
        tables.append({"program": program, "version": 1, "routes": rs, "fallbacks": {}, "reason": "", "caused_by": [],
                       "ts": T0})
    answers = load()["answers"]
    answers["/v1/routing"] = {"items": tables}
    answers["/v1/history"] = {"window": "1m", "items": windows}
    return {"answers": answers, "stream": []}


def tail_event(n: int) -> dict[str, Any]:
    return {"id": f"00000000-0000-7000-8000-{n:012d}", "kind": "lm_call", "ts": T0, "program": "program-000",
            "route": "route-00", "model": "model-0", "status": "ok", "duration_ms": 100.0 + n % 50}


# ---------------------------------------------------------------- start-up

CHILD = r"""
import sys, time
sys.path.insert(0, {repo!r})
from adaptd.tui.app import DashApp

class Timed(DashApp):
    def on_data_loaded(self, message):
        super().on_data_loaded(message)
        if self.refreshes == 1:
            self.call_after_refresh(self.done)

    def done(self):
        print("RENDERED", time.time(), flush=True)
        self.exit()

Timed({url!r}, poll_s=60, stream=True).run(headless=True, size=(160, 45))
"""


def startup_once(url: str) -> float:
    """Seconds from process start to the first screen painted with data."""
    code = CHILD.format(repo=str(REPO), url=url)
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TEXTUAL_ANIMATIONS": "none"})
    for line in out.stdout.splitlines():
        if line.startswith("RENDERED"):
            return float(line.split()[1]) - started
    raise RuntimeError(f"child did not render: {out.stdout[-500:]} {out.stderr[-2000:]}")


# ---------------------------------------------------------------- update


async def update_times(url: str, updates: int, *, keyed: bool) -> tuple[list[float], int]:
    """Per update, seconds from the refresh message to the repaint, and the events the
    tail received meanwhile.  ``keyed``: our screen (cached view-model rows, keyed table
    repainting changed rows); else the peer: uncached rows rebuilt into a plain Textual
    DataTable mounted on the same screen."""
    from textual.widgets import DataTable

    from adaptd.tui.app import make_app
    from adaptd.tui.client import DaemonClient
    from adaptd.tui.keyed_table import KeyedTable
    from adaptd.tui.messages import DataLoaded
    from adaptd.tui.screens.routes import RoutesScreen
    from adaptd.tui.viewmodel import ROUTE_COLUMNS, route_rows

    app = make_app(url, poll_s=3600, clock=lambda: "00:00:00")
    client = DaemonClient(url)
    async with app.run_test(size=(160, 45)) as pilot:
        deadline = time.monotonic() + 30
        while not app.refreshes:
            if time.monotonic() > deadline:
                raise RuntimeError("no data from the recorded daemon")
            await pilot.pause(0.05)
        await pilot.press("2")
        assert isinstance(app.screen, RoutesScreen)
        table = app.screen.query_one(KeyedTable)
        await pilot.pause(0.2)
        assert len(table.shown) == 1000, len(table.shown)
        peer = None
        if not keyed:
            table.display = False
            peer = DataTable(cursor_type="row", zebra_stripes=True)
            await app.screen.mount(peer, before=table)
            peer.add_columns(*ROUTE_COLUMNS)
        snapshots = []
        for i in range(updates):  # fetched up front: the benchmark times applying, not HTTP
            answers = synthetic(bump=i + 1)["answers"]
            data = await client.snapshot()
            data.windows = answers["/v1/history"]["items"]
            snapshots.append(data)
        await client.aclose()
        times = []
        loop = asyncio.get_running_loop()
        for data in snapshots:
            painted = loop.create_future()
            t0 = time.perf_counter()
            if peer is None:
                app.on_data_loaded(DataLoaded(data, "00:00:00"))
            else:
                app.data = data
                peer.clear()
                peer.add_rows(route_rows(data).values())
            app.call_after_refresh(lambda: painted.done() or painted.set_result(time.perf_counter()))
            times.append(await painted - t0)
            await pilot.pause(0.1)  # the stream keeps flowing between updates
        return times, len(app.tail)


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": round(1000 * statistics.median(xs), 2),
            "p95_ms": round(1000 * xs[min(len(xs) - 1, int(0.95 * len(xs)))], 2), "n": len(xs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="start-up runs")
    parser.add_argument("--updates", type=int, default=60, help="updates timed per variant")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with RecordedDaemon(load()) as small:
        startup_once(small.url)  # warm the OS file cache once, not counted
        results["startup_recorded"] = summary([startup_once(small.url) for _ in range(args.runs)])
    with RecordedDaemon(synthetic(bump=0), rate=10.0, make_event=tail_event) as big:
        results["startup_1000_routes"] = summary([startup_once(big.url) for _ in range(args.runs)])
        keyed, received = asyncio.run(update_times(big.url, args.updates, keyed=True))
        results["update_1000_routes_keyed"] = {**summary(keyed), "tail_events_received": received}
        plain, received = asyncio.run(update_times(big.url, args.updates, keyed=False))
        results["update_1000_routes_plain_rebuild"] = {**summary(plain), "tail_events_received": received}
    results["targets"] = {"startup_s": 1.5, "update_ms": 50}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
