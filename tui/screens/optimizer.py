"""Optimizer: jobs and past runs, metric against cost; start an optimization."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static
from textual_plotext import PlotextPlot

from adaptd.tui.keyed_table import KeyedTable
from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import OPTIMIZER_COLUMNS, DashData, metric_vs_cost, optimizer_jobs

#: Where a new optimization job is asked for (the optimizer's API, issue 6).
JOBS_PATH = "/v1/optimization/jobs"


class OptimizerScreen(DashScreen):
    """Each job's newest state, and finished jobs' metric against their cost."""

    LABEL = "Optimizer"
    BINDINGS = [Binding("o", "optimize", "Start optimization")]
    DEFAULT_CSS = """
    OptimizerScreen KeyedTable { height: 1fr; }
    OptimizerScreen #optimizer-note { height: auto; padding: 0 1; }
    OptimizerScreen PlotextPlot { height: 12; }
    """

    refusal: str = ""
    """The last refused start (kept on screen until a start succeeds)."""

    plotted: tuple[str, ...] = ()
    """Job ids of the points in the metric-against-cost plot."""

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(OPTIMIZER_COLUMNS, id="jobs")
        yield Static("", id="optimizer-note")
        yield PlotextPlot(id="metric-cost")

    def show(self, data: DashData) -> None:
        jobs = optimizer_jobs(data.optimizer_runs)
        self.query_one(KeyedTable).apply(jobs)
        note = self.query_one("#optimizer-note", Static)
        if data.optimizer_runs is None:
            text = "this daemon has no optimizer runs endpoint (/v1/optimizer/runs)"
        else:
            text = f"{len(jobs)} jobs · o: start an optimization of the selected job's program"
        note.update(text + (f"\n[b red]{self.refusal}[/]" if self.refusal else ""))
        costs, scores, plotted = metric_vs_cost(data.optimizer_runs)
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("finished jobs: metric after against cost (USD)")
        if costs:
            plt.scatter(costs, scores, marker="dot")
        self.plotted = tuple(plotted)
        plot.refresh()

    def target_program(self) -> str | None:
        """The selected job's program, else the first program the daemon knows."""
        table = self.query_one(KeyedTable)
        key = table.selected_key()
        if key is not None:
            return table.shown[key][1]
        data = self.dash.data
        names = [t["program"] for t in data.tables] + [p["program"] for p in data.programs] if data else []
        return names[0] if names else None

    def action_optimize(self) -> None:
        program = self.target_program()
        if program is None:
            self.notify("no program to optimize yet", severity="warning")
            return
        self.dash.request_action(f"start optimization of {program}", JOBS_PATH, {"program": program},
                                 confirm=f"Start an optimization of {program}? It calls LMs and costs money.")

    def action_failed(self, text: str) -> None:
        """Keep a refused start (e.g. no optimizer endpoint) on screen where the user looks."""
        self.refusal = text
        if self.dash.data is not None:
            self.show(self.dash.data)

    def action_succeeded(self, text: str) -> None:
        self.refusal = ""
