"""Adaptations: the timeline of routing decisions with their reasons; revert."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from adaptd.tui.keyed_table import KeyedTable
from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import ADAPTATION_COLUMNS, DashData, adaptation_rows


class AdaptationsScreen(DashScreen):
    """Newest decision first; ``t`` hides or shows the routing-table versions."""

    LABEL = "Adaptations"
    BINDINGS = [Binding("r", "revert", "Revert"), Binding("t", "toggle_tables", "Tables on/off")]
    DEFAULT_CSS = """
    AdaptationsScreen KeyedTable { height: 1fr; }
    AdaptationsScreen #reason { height: auto; max-height: 8; border: round $primary; padding: 0 1; }
    """

    hide_tables: bool = False
    """True to leave out the policy's routing-table versions."""

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(ADAPTATION_COLUMNS, id="adaptations")
        yield Static("select a decision to read its reason · r: revert it · t: hide routing tables", id="reason")

    def show(self, data: DashData) -> None:
        self.query_one(KeyedTable).apply(adaptation_rows(data, hide_tables=self.hide_tables))
        self._reason()

    def on_keyed_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        self._reason()

    def _reason(self) -> None:
        table = self.query_one(KeyedTable)
        key = table.selected_key()
        row = table.shown.get(key) if key is not None else None
        if row is not None:
            self.query_one("#reason", Static).update(
                f"[b]{row[2]}[/b] {row[3]}/{row[4]} by {row[1]} at {row[0]}{'  [reverted]' if row[6] else ''}\n{row[7]}")

    def action_toggle_tables(self) -> None:
        self.hide_tables = not self.hide_tables
        if self.dash.data is not None:
            self.show(self.dash.data)

    def action_revert(self) -> None:
        table = self.query_one(KeyedTable)
        key = table.selected_key()
        if key is None:
            self.notify("no adaptation selected", severity="warning")
            return
        row = table.shown[key]
        self.dash.request_action(
            f"revert {row[2]} {row[4]}", f"/v1/adaptations/{key}/revert", {"reason": "reverted from adaptd dash"},
            confirm=f"Revert {row[2]} of {row[3]}/{row[4]} at {row[0]}? The inverse action is applied now.")
