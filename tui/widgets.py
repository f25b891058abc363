"""Small widgets every screen shares: the connection banner and the confirm modal."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConnectionBanner(Static):
    """One line: connected and when the data is from, or stale and reconnecting."""

    DEFAULT_CSS = """
    ConnectionBanner { height: 1; padding: 0 1; background: $success-darken-2; color: $text; }
    ConnectionBanner.stale { background: $error; text-style: bold; }
    """

    text: reactive[str] = reactive("connecting…")
    """What the banner says."""
    stale: reactive[bool] = reactive(False)
    """True while the daemon is unreachable (the screen shows the last state)."""

    def render(self) -> str:
        return self.text

    def watch_stale(self, stale: bool) -> None:
        self.set_class(stale, "stale")


class ConfirmScreen(ModalScreen[bool]):
    """Asks before a destructive action: ``y`` / Enter on Yes confirms, ``n`` / Escape cancels."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmScreen Label { width: 100%; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align: center middle; }
    ConfirmScreen Button { margin: 0 2; }
    """
    BINDINGS = [("y", "answer(True)", "Yes"), ("n", "answer(False)", "No"), ("escape", "answer(False)", "Cancel")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
