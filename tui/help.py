"""The help screen: every key, grouped by screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# adaptd dash — keys

| key | does |
|---|---|
| `1` … `6` | Overview · Routes · Signals · Adaptations · Optimizer · Live tail |
| `ctrl+p` | command palette (screens and actions by name) |
| `ctrl+r` | refresh now (also retries a lost daemon at once) |
| `?` | this help · `escape` closes it |
| `q` | quit |

- **Routes**: `enter` plots the route's history · `p` pin the route · `u` unpin its program.
- **Signals**: `a` acknowledge the selected signal.
- **Adaptations**: `r` revert the selected decision · `t` hide/show routing-table versions.
- **Optimizer**: `o` start an optimization of the selected job's program.
- **Live tail**: `/` filter (`kind:lm_call program:qa route:primary` and words) · `c` clear.

Pin, unpin, revert and starting an optimization ask to confirm (`y` / `n`).
When the daemon is down the banner turns red, the last state stays on screen, and the
dashboard reconnects by itself.  The mouse works everywhere (click rows, tabs, buttons).
"""


class HelpScreen(ModalScreen[None]):
    """Keys and what they do; any of ``escape``, ``?`` or ``q`` closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS = [("escape", "dismiss", "Close"), ("question_mark", "dismiss", "Close"), ("q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
