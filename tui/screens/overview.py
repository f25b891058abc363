"""Overview: events/s, success, p50/p95, cost per hour and open incidents, over time."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static
from textual_plotext import PlotextPlot

from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import DashData, overview

CARDS = ("events/s", "success", "p50", "p95", "cost/hour", "open incidents")
SPARKS = (("events_per_s", "events/s"), ("success", "success"), ("p95_ms", "p95 ms"),
          ("cost_per_hour", "cost/hour"))


class OverviewScreen(DashScreen):
    """The whole workload at a glance; series cover the latest history windows."""

    LABEL = "Overview"
    DEFAULT_CSS = """
    OverviewScreen #cards { height: 5; grid-size: 6; grid-gutter: 0 1; padding: 0 1; }
    OverviewScreen .card { border: round $primary; height: 5; content-align: center middle; text-align: center; }
    OverviewScreen #sparks { height: 8; padding: 0 1; }
    OverviewScreen .spark { width: 1fr; height: 8; padding: 0 1; }
    OverviewScreen .spark Sparkline { height: 5; }
    OverviewScreen #window { height: 1; padding: 0 1; color: $text-muted; }
    OverviewScreen PlotextPlot { height: 1fr; min-height: 8; }
    """

    plotted: int = 0
    """Windows in the plot (and each sparkline) after the last refresh."""

    def compose_body(self) -> ComposeResult:
        with Grid(id="cards"):
            for name in CARDS:
                yield Static("—", classes="card", id=f"card-{name.replace('/', '-').replace(' ', '-')}")
        yield Label("", id="window")
        with Horizontal(id="sparks"):
            for attr, title in SPARKS:
                with Vertical(classes="spark"):
                    yield Label(title)
                    yield Sparkline([], id=f"spark-{attr}")
        yield PlotextPlot(id="plot")

    def show(self, data: DashData) -> None:
        model = overview(data)
        for name in CARDS:
            card = self.query_one(f"#card-{name.replace('/', '-').replace(' ', '-')}", Static)
            card.update(f"[b]{model.cards[name]}[/b]\n{name}")
        self.query_one("#window", Label).update(f"latest closed window: {model.cards['window']}")
        for attr, _ in SPARKS:
            self.query_one(f"#spark-{attr}", Sparkline).data = list(getattr(model, attr))
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("events/s and p95 latency (ms) per window")
        if model.starts:
            xs: list[float] = list(range(len(model.starts)))  # plotext takes float positions
            plt.plot(xs, model.events_per_s, label="events/s")
            plt.plot(xs, model.p95_ms, label="p95 ms", yside="right")
            step = max(1, len(xs) // 6)
            plt.xticks(xs[::step], model.starts[::step])
        self.plotted = len(model.starts)
        plot.refresh()
