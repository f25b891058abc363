"""The frame every screen shares: header, connection banner, body, footer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from adaptd.tui.viewmodel import DashData
from adaptd.tui.widgets import ConnectionBanner

if TYPE_CHECKING:
    from adaptd.tui.app import DashApp


class DashScreen(Screen):
    """A screen that renders the app's latest ``DashData`` (``show``) and the banner."""

    #: Shown in the header next to the app's title.
    LABEL = ""

    @property
    def dash(self) -> DashApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBanner(id="banner")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets."""
        return iter(())

    @property
    def is_composed(self) -> bool:
        """True once ``compose`` has mounted the banner and the body."""
        return bool(self.query(ConnectionBanner))

    def on_mount(self) -> None:
        self.sub_title = self.LABEL
        self.sync()

    def on_screen_resume(self) -> None:
        self.sync()

    def sync(self) -> None:
        """Render the banner and, when there is data, the body (stale data is still shown).

        Does nothing before the screen's widgets exist (a resume can arrive first; the
        mount that follows syncs).
        """
        if not self.is_composed:
            return
        banner = self.query_one(ConnectionBanner)
        banner.text, banner.stale = self.dash.banner_text(), self.dash.stale
        if self.dash.data is not None:
            self.show(self.dash.data)

    def show(self, data: DashData) -> None:
        """Render ``data`` (called on every refresh while this screen is active)."""
