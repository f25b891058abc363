"""Programs and routes: share, success, latency, cost, quality, breaker, pin; drill into
a route's history; pin / unpin."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label
from textual_plotext import PlotextPlot

from adaptd.tui.keyed_table import KeyedTable
from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import ROUTE_COLUMNS, DashData, RouteRows, route_history


class RoutesScreen(DashScreen):
    """Every (program, route); Enter plots the selected route's windows."""

    LABEL = "Programs and routes"
    BINDINGS = [
        Binding("p", "pin", "Pin route"),
        Binding("u", "unpin", "Unpin program"),
    ]
    DEFAULT_CSS = """
    RoutesScreen KeyedTable { height: 1fr; }
    RoutesScreen #drill-title { height: 1; padding: 0 1; color: $text-muted; }
    RoutesScreen PlotextPlot { height: 12; display: none; }
    RoutesScreen PlotextPlot.open { display: block; }
    """

    drilled: tuple[str, str] | None = None
    """The (program, route) whose history is plotted, if any."""

    plotted: int = 0
    """Windows in the drilled-into route's history plot."""

    def __init__(self) -> None:
        super().__init__()
        self.route_rows = RouteRows()

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(ROUTE_COLUMNS, id="routes")
        yield Label("Enter: plot a route's history · p: pin it · u: unpin its program", id="drill-title")
        yield PlotextPlot(id="history")

    def show(self, data: DashData) -> None:
        self.query_one(KeyedTable).apply(self.route_rows(data))
        if self.drilled is not None:
            self._plot(data, *self.drilled)

    def selected(self) -> tuple[str, str] | None:
        key = self.query_one(KeyedTable).selected_key()
        return key if isinstance(key, tuple) else None

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        self.action_drill()

    def action_drill(self) -> None:
        key = self.selected()
        if key is None or self.dash.data is None:
            return
        self.drilled = key
        self._plot(self.dash.data, *key)

    def _plot(self, data: DashData, program: str, route: str) -> None:
        starts, p95, errors = route_history(data, program, route)
        plot = self.query_one("#history", PlotextPlot)
        plot.add_class("open")
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{program} / {route}: p95 ms and error % per {data.window} window")
        if starts:
            xs: list[float] = list(range(len(starts)))  # plotext takes float positions
            plt.plot(xs, p95, label="p95 ms")
            plt.plot(xs, errors, label="error %", yside="right")
            step = max(1, len(xs) // 6)
            plt.xticks(xs[::step], starts[::step])
        self.plotted = len(starts)
        self.query_one("#drill-title", Label).update(f"history of {program} / {route} ({len(starts)} windows)")
        plot.refresh()

    def action_pin(self) -> None:
        key = self.selected()
        if key is None:
            self.notify("no route selected", severity="warning")
            return
        program, route = key
        self.dash.request_action(
            f"pin {program}/{route}", f"/v1/routing/{program}/pin", {"route": route, "reason": "pinned from adaptd dash"},
            confirm=f"Pin {route}? All of {program}'s traffic goes to it until unpinned.")

    def action_unpin(self) -> None:
        key = self.selected()
        if key is None:
            self.notify("no route selected", severity="warning")
            return
        program = key[0]
        self.dash.request_action(
            f"unpin {program}", f"/v1/routing/{program}/unpin", {"reason": "unpinned from adaptd dash"},
            confirm=f"Unpin {program}? The policy decides its routes again.")
