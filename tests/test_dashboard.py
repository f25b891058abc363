"""The dashboard against a real daemon fed over HTTP: every screen shows the daemon's
state, every action goes through the admin API (destructive ones after a confirmation),
and a daemon that goes away is shown as stale and reconnected to by itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from conftest import DaemonProcess, run_cli, wait_until
from dash_workload import CONFIG, TOKENS, optimize_config, optimizer_runs, workload
from textual.command import CommandList, CommandPalette

from adaptd.streams.events import new_id
from adaptd.tui.app import DashApp, make_app
from adaptd.tui.client import Backoff
from adaptd.tui.help import HelpScreen
from adaptd.tui.keyed_table import KeyedTable
from adaptd.tui.screens import (
    AdaptationsScreen,
    OptimizerScreen,
    OverviewScreen,
    RoutesScreen,
    SignalsScreen,
    TailScreen,
)
from adaptd.tui.viewmodel import open_incidents
from adaptd.tui.widgets import ConfirmScreen, ConnectionBanner

SIZE = (160, 45)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(pilot: Any, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Let the app run until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await pilot.pause(0.05)


@pytest.fixture(scope="module")
def fed_daemon(tmp_path_factory):
    """One daemon for the module, with routing for ``qa`` and ``summarize`` registered for
    optimization, that has projected the whole workload.  Tests that act leave the routing
    as they found it (pin then unpin)."""
    root = tmp_path_factory.mktemp("dash")
    config = root / "adaptd.toml"
    config.write_text(optimize_config(root))
    daemon = DaemonProcess(root / "data", config=config).start()
    try:
        answer = httpx.post(f"{daemon.url}/v1/events", content=orjson.dumps(workload() + optimizer_runs()), timeout=60)
        assert answer.status_code == 200 and not answer.json()["rejected"]
        wait_until(lambda: httpx.get(f"{daemon.url}/v1/stats").json()["projector_lag"] == 0
                   and httpx.get(f"{daemon.url}/v1/signals").json()["items"], timeout=60)
        yield daemon
    finally:
        daemon.stop()


def app_for(daemon, **kwargs: Any) -> DashApp:
    return make_app(daemon.url, poll_s=0.3, clock=lambda: "12:00:00", **kwargs)


def rows(app: DashApp) -> dict:
    return app.screen.query_one(KeyedTable).shown


async def test_every_screen_shows_the_daemon_state(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        banner = app.screen.query_one(ConnectionBanner)
        assert banner.text == f"● {fed_daemon.url} · updated 12:00:00" and not banner.stale
        cards = {c.id: str(c.render()) for c in app.screen.query(".card")}
        assert "8.0" in cards["card-events-s"] and "$" in cards["card-cost-hour"] and "ms" in cards["card-p95"]
        signals = httpx.get(f"{fed_daemon.url}/v1/signals", params={"limit": 1000}).json()["items"]
        assert cards["card-open-incidents"].startswith(f"{open_incidents(signals)}\n") and open_incidents(signals) >= 1
        assert app.screen.plotted >= 3  # the workload spans four minutes of 1m windows
        assert len(app.screen.query_one("#spark-events_per_s").data) == app.screen.plotted

        await pilot.press("2")
        assert isinstance(app.screen, RoutesScreen)
        routes = await until(pilot, lambda: rows(app))
        assert list(routes)[:2] == [("qa", "primary"), ("qa", "backup")]
        assert routes[("qa", "primary")][10] == "open" and routes[("qa", "backup")][10] == "closed"
        assert ("summarize", "slow") in routes and routes[("summarize", "slow")][3] == "—"
        await pilot.press("enter")
        assert app.screen.drilled == ("qa", "primary")
        assert "history of qa / primary" in str(app.screen.query_one("#drill-title").render())
        assert app.screen.plotted >= 3 and app.screen.query_one("#history").display
        await pilot.click(KeyedTable, offset=(5, 2))  # the mouse: a click highlights, a second one drills in
        await pilot.click(KeyedTable, offset=(5, 2))
        assert app.screen.drilled == ("qa", "backup")

        await pilot.press("3")
        assert isinstance(app.screen, SignalsScreen)
        signals = await until(pilot, lambda: rows(app))
        assert {r[1] for r in signals.values()} >= {"breaker", "anomaly"}
        assert "consecutive failures" in " ".join(r[9] for r in signals.values())

        await pilot.press("4")
        assert isinstance(app.screen, AdaptationsScreen)
        timeline = await until(pilot, lambda: rows(app))
        assert {"routing_table", "breaker_open"} <= {r[2] for r in timeline.values()}
        await pilot.press("t")
        assert "routing_table" not in {r[2] for r in rows(app).values()}

        await pilot.press("5")
        assert isinstance(app.screen, OptimizerScreen)
        jobs = await until(pilot, lambda: rows(app))
        assert [(j[0], j[3], j[5]) for j in jobs.values()] == [("job-3", "running", "—"), ("job-2", "succeeded", "0.830"),
                                                               ("job-1", "succeeded", "0.790")]
        assert app.screen.plotted == ("job-2", "job-1")  # finished jobs: metric against cost


async def test_live_tail_shows_new_events_through_its_filter(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("6")
        assert isinstance(app.screen, TailScreen)
        await pilot.press("slash")
        await pilot.press(*"program:summarize")
        await pilot.press("enter")
        events = [{"id": str(new_id()), "kind": "execution", "ts": "2026-11-22T09:00:00+00:00", "program": p,
                   "route": "r1", "status": "ok", "duration_ms": 12.5} for p in ("qa", "summarize")]
        httpx.post(f"{fed_daemon.url}/v1/events", content=orjson.dumps(events), timeout=10)
        ids = {e["id"] for e in events}
        await until(pilot, lambda: ids <= {e["id"] for _, e in app.tail})
        log = app.screen.query_one("#tail")
        shown = [line for line in log.lines if line.strip()]
        assert shown == [line for line, e in app.tail if e.get("program") == "summarize"]
        mine = [line for line, e in app.tail if e["id"] in ids]
        assert mine[0] not in shown and mine[1] in shown  # qa filtered out, summarize shown
        assert "summarize/r1" in mine[1] and "12 ms" in mine[1] and "status=ok" in mine[1]
        await pilot.press("1")  # the number keys switch screens again once the filter is left
        assert isinstance(app.screen, OverviewScreen)


async def test_pin_and_unpin_go_through_the_admin_api_after_confirmation(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("2")
        await until(pilot, lambda: rows(app))
        await pilot.press("down")  # qa / backup
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen) and "Pin backup" in app.screen.question
        await pilot.press("n")
        assert app.results[-1].text == "pin qa/backup: cancelled"
        table = httpx.get(f"{fed_daemon.url}/v1/routing/qa").json()
        assert not any(r["pinned"] for r in table["routes"])  # a cancelled pin never reached the daemon
        await pilot.press("p")
        await pilot.press("y")
        result = await until(pilot, lambda: app.results[-1] if app.results[-1].ok else None)
        assert result.label == "pin qa/backup"
        await until(pilot, lambda: rows(app).get(("qa", "backup"), ())[11:] == ("pinned",))
        assert rows(app)[("qa", "backup")][3] == "100.0%"

        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen) and "Unpin qa" in app.screen.question
        await pilot.click("#yes")  # the mouse answers the confirmation too
        await until(pilot, lambda: len(app.results) == 3 and app.results[-1].ok)
        await until(pilot, lambda: rows(app)[("qa", "backup")][11] == "")


async def test_acknowledging_a_signal_marks_it_acknowledged(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("3")
        signals = await until(pilot, lambda: rows(app))
        first = next(iter(signals))
        await pilot.press("a")
        await until(pilot, lambda: app.results and app.results[-1].ok)
        await until(pilot, lambda: rows(app)[first][8] == "yes")
        await pilot.press("a")  # twice: the daemon's refusal is shown, not hidden
        refused = await until(pilot, lambda: len(app.results) == 2 and app.results[-1])
        assert not refused.ok and "409" in refused.text and "already acknowledged" in refused.text


async def test_reverting_an_adaptation_appends_its_inverse_and_marks_it_reverted(fed_daemon) -> None:
    pin = httpx.post(f"{fed_daemon.url}/v1/routing/qa/pin", json={"route": "backup"}).json()["id"]
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("4")
        await until(pilot, lambda: pin in rows(app))
        table = app.screen.query_one(KeyedTable)
        table.move_cursor(row=table.get_row_index(pin))
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen) and "Revert pin" in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: app.results and app.results[-1].ok)
        await until(pilot, lambda: rows(app)[pin][6] == "reverted")
        assert any(r[2] == "unpin" and r[1] == "api" for r in rows(app).values())
        table.move_cursor(row=len(rows(app)) - 1)  # the initial routing table: not revertible
        await pilot.press("r", "y")
        refused = await until(pilot, lambda: len(app.results) == 2 and app.results[-1])
        assert not refused.ok and "422" in refused.text and "computed by the policy" in refused.text


async def test_starting_an_optimization_runs_a_job_and_a_refusal_stays_visible(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("5")
        await until(pilot, lambda: rows(app))
        # job-3 is qa's, and qa is not registered for optimization: the daemon says so on screen
        await pilot.press("o")
        assert isinstance(app.screen, ConfirmScreen) and "optimization of qa" in app.screen.question
        await pilot.press("y")
        refused = await until(pilot, lambda: app.results and app.results[-1])
        assert not refused.ok and "refused (4" in refused.text
        assert refused.text in str(app.screen.query_one("#optimizer-note").render())
        # job-2 is summarize's, which is registered: a real job runs on the toy task
        await pilot.press("down", "o", "y")
        started = await until(pilot, lambda: len(app.results) == 2 and app.results[-1])
        assert started.ok and started.label == "start optimization of summarize", started.text
        # the note shows the newer result once the screen has re-rendered
        await until(pilot, lambda: refused.text not in str(app.screen.query_one("#optimizer-note").render()))
        new_jobs = lambda: [j for j in rows(app).values() if j[0] not in ("job-1", "job-2", "job-3")]
        job = (await until(pilot, lambda: [j for j in new_jobs() if j[3] == "succeeded"], timeout=60))[0]
        assert job[1:3] == ("summarize", "BootstrapFewShot") and float(job[5]) > float(job[4])
        assert job[0] in app.screen.plotted


async def test_help_screen_and_command_palette(fed_daemon) -> None:
    app = app_for(fed_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.press(*"go to signals")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette)
                    and app.screen.query_one(CommandList).option_count == 1, timeout=5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, SignalsScreen), timeout=5)


async def test_a_daemon_that_goes_down_is_shown_stale_and_reconnected(fed_daemon) -> None:
    app = app_for(fed_daemon, backoff=Backoff(base=0.1, cap=0.5, rng=lambda: 0.0))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes)
        await pilot.press("2")
        shown = await until(pilot, lambda: dict(rows(app)))
        fed_daemon.kill9()
        await until(pilot, lambda: app.stale)
        banner = app.screen.query_one(ConnectionBanner)
        assert banner.stale and banner.has_class("stale")
        assert "daemon unreachable" in banner.text and "last state from 12:00:00 (stale) · reconnecting" in banner.text
        assert rows(app) == shown  # the last state stays on screen
        fed_daemon.start()
        await until(pilot, lambda: not app.stale and app.reconnects == 1, timeout=60)
        assert not banner.stale and banner.text.startswith("● ")
        # the live tail reconnects too, and resumes after the last offset it saw
        event = {"id": str(new_id()), "kind": "execution", "ts": "2026-11-22T09:30:00+00:00", "program": "after",
                 "status": "ok"}
        assert httpx.post(f"{fed_daemon.url}/v1/events", content=orjson.dumps([event]), timeout=10).status_code == 200
        await until(pilot, lambda: any(e.get("program") == "after" for _, e in app.tail), timeout=60)


async def test_the_token_picks_the_tenant_and_only_admins_may_act(tmp_path) -> None:
    (tmp_path / "adaptd.toml").write_text(TOKENS + CONFIG)
    daemon = DaemonProcess(tmp_path / "data", config=tmp_path / "adaptd.toml",
                           env={"ADAPTD_TEST_TOKEN": "t-viewer"}).start()
    try:
        answer = httpx.post(f"{daemon.url}/v1/events", content=orjson.dumps(workload(seconds=180)), timeout=60,
                            headers={"Authorization": "Bearer t-viewer"})
        assert answer.status_code == 200 and not answer.json()["rejected"]
        wait_until(lambda: httpx.get(f"{daemon.url}/v1/signals", headers={"Authorization": "Bearer t-viewer"})
                   .json()["items"], timeout=60)

        viewer = app_for(daemon, token="t-viewer")
        async with viewer.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: rows(viewer))  # the guest tenant's own signals
            await pilot.press("a")
            refused = await until(pilot, lambda: viewer.results and viewer.results[-1])
            assert not refused.ok and "refused (403)" in refused.text and "not an admin" in refused.text

        admin = app_for(daemon, token="t-admin")  # another tenant: none of the guest's data
        async with admin.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: admin.refreshes)
            await pilot.press("3")
            assert not rows(admin) and not admin.stale

        stranger = app_for(daemon, token="wrong", backoff=Backoff(base=600, cap=600, rng=lambda: 0.0))
        async with stranger.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: stranger.stale)
            banner = stranger.screen.query_one(ConnectionBanner)
            assert "HTTP 401" in banner.text and "check --token" in banner.text and stranger.data is None
    finally:
        daemon.stop()


def test_dash_command_refuses_a_url_that_is_not_http() -> None:
    result = run_cli("dash", "--url", "127.0.0.1:7710")
    assert result.returncode == 2 and "must start with http:// or https://" in result.stderr
    assert "--token" in run_cli("dash", "--help").stdout
