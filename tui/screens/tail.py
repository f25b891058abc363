"""Live tail: the daemon's event stream, filtered as you type."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Log

from adaptd.tui.screens.base import DashScreen
from adaptd.tui.viewmodel import DashData, TailFilter


class TailScreen(DashScreen):
    """The newest events (the app keeps a bounded buffer); ``/`` focuses the filter."""

    LABEL = "Live tail"
    #: The log has focus so the number keys still switch screens; ``/`` moves to the filter.
    AUTO_FOCUS = "#tail"
    BINDINGS = [Binding("slash", "focus_filter", "Filter"), Binding("c", "clear", "Clear")]
    DEFAULT_CSS = """
    TailScreen Input { height: 3; }
    TailScreen Log { height: 1fr; }
    """

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: kind:lm_call program:qa route:primary words…", id="filter")
        yield Log(id="tail", max_lines=2000)

    @property
    def tail_filter(self) -> TailFilter:
        return TailFilter.parse(self.query_one(Input).value)

    def show(self, data: DashData) -> None:
        """The tail follows the stream, not the refreshes."""

    def on_mount(self) -> None:
        super().on_mount()
        self.redraw()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.redraw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(Log).focus()

    def redraw(self) -> None:
        """Re-render the buffer through the current filter (nothing before compose)."""
        if not self.is_composed:
            return
        log = self.query_one(Log)
        log.clear()
        f = self.tail_filter
        log.write_lines([line for line, event in self.dash.tail if f.matches(event, line)])

    def add(self, line: str, event: dict) -> None:
        """Append one event if it passes the filter (dropped before compose: ``redraw``
        on mount shows it from the app's buffer)."""
        if self.is_composed and self.tail_filter.matches(event, line):
            self.query_one(Log).write_line(line)

    def action_focus_filter(self) -> None:
        self.query_one(Input).focus()

    def action_clear(self) -> None:
        self.dash.tail.clear()
        self.redraw()
