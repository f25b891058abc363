"""SVG snapshots of every dashboard screen over recorded daemon answers.

The answers (``fixtures/dash_recorded.json``, see ``dash_server``) come from a real
daemon fed a workload with fixed times and ids; the clock and the daemon's name in the
banner are fixed too, so every run renders the same screens.  Update after an intended
change with ``pytest tests/test_dashboard_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dash_server import RecordedDaemon, load

from adaptd.tui.app import DashApp, make_app
from adaptd.tui.client import Backoff

SIZE = (150, 40)


@pytest.fixture(scope="module")
def recorded() -> Iterator[RecordedDaemon]:
    with RecordedDaemon(load()) as server:
        yield server


def dashboard(server: RecordedDaemon, **kwargs: Any) -> DashApp:
    return make_app(server.url, poll_s=600, clock=lambda: "08:04:00", label="recorded daemon", **kwargs)


async def _until(pilot: Any, condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await pilot.pause(0.05)


def showing(*keys: str, tail: int = 24) -> Callable[[Any], Any]:
    """``run_before``: wait for the data and the recorded tail, then press ``keys``."""

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: app.refreshes and len(app.tail) >= tail)
        await pilot.press(*keys)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("name, keys", [
    ("overview", ()),
    ("routes", ("2",)),
    ("routes_history", ("2", "enter")),
    ("signals", ("3",)),
    ("adaptations", ("4",)),
    ("adaptations_without_tables", ("4", "t")),
    ("optimizer", ("5",)),
    ("tail", ("6",)),
    ("tail_filtered", ("6", "slash", *"kind:lm_call route:primary", "enter")),
    ("confirm_pin", ("2", "down", "p")),
    ("help", ("question_mark",)),
])
def test_screen_snapshot(name: str, keys: tuple[str, ...], recorded: RecordedDaemon, snap_compare) -> None:
    assert snap_compare(dashboard(recorded), terminal_size=SIZE, run_before=showing(*keys))


def test_stale_banner_snapshot(snap_compare) -> None:
    """Data from a daemon that then went away: the last state, marked stale."""
    server = RecordedDaemon(load())
    with server:
        # no retry while the snapshot is taken: the banner shows the first failure
        app = dashboard(server, backoff=Backoff(base=600, cap=600, rng=lambda: 0.0))

        async def run_before(pilot: Any) -> None:
            await _until(pilot, lambda: app.refreshes)
            server.__exit__()
            app.action_refresh_now()
            await _until(pilot, lambda: app.stale)
            await pilot.press("2")

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
