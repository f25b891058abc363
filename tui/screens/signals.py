"""Signals: anomalies, drift and breaker transitions with their explanation; acknowledge."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from adaptd.tui.keyed_table import KeyedTable
from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import SIGNAL_COLUMNS, DashData, signal_rows


class SignalsScreen(DashScreen):
    """Newest signals first; the panel below explains the selected one in full."""

    LABEL = "Signals"
    BINDINGS = [Binding("a", "ack", "Acknowledge")]
    DEFAULT_CSS = """
    SignalsScreen KeyedTable { height: 1fr; }
    SignalsScreen #explanation { height: auto; max-height: 8; border: round $primary; padding: 0 1; }
    """

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(SIGNAL_COLUMNS, id="signals")
        yield Static("select a signal to read its explanation · a: acknowledge it", id="explanation")

    def show(self, data: DashData) -> None:
        self.query_one(KeyedTable).apply(signal_rows(data))
        self._explain()

    def on_keyed_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        self._explain()

    def _explain(self) -> None:
        key = self.query_one(KeyedTable).selected_key()
        row = self.query_one(KeyedTable).shown.get(key) if key is not None else None
        if row is not None:
            self.query_one("#explanation", Static).update(
                f"[b]{row[1]} {row[2]}[/b] on {row[4]}/{row[5]} ({row[6]}, score {row[7]}) at {row[0]}"
                f"{'  [acknowledged]' if row[8] else ''}\n{row[9]}")

    def action_ack(self) -> None:
        key = self.query_one(KeyedTable).selected_key()
        if key is None:
            self.notify("no signal selected", severity="warning")
            return
        self.dash.request_action(f"acknowledge signal {key}", f"/v1/signals/{key}/ack",
                                 {"reason": "acknowledged from adaptd dash"})
