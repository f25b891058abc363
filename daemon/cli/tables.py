"""Rich output shared by the commands that print tables (``executions``, ``status``, ...):
the ``rich`` module (or a one-line failure saying how to get it), a plain table, and
printing that stays greppable when stdout is not a terminal."""

from __future__ import annotations

import os
import sys
from typing import Any

from adaptd.daemon.cli.common import fail


def rich_module() -> Any:
    """The ``rich`` module, or exit 2 saying how to get it (it comes with the dashboard's extra)."""
    try:
        import rich
        import rich.box
        import rich.console
        import rich.markup
        import rich.table
        import rich.tree
    except ImportError:
        fail("tables need the 'rich' package: pip install rich (or pass --json)")
    return rich


def show(*renderables: Any) -> None:
    """Print to stdout; not a terminal (a pipe, a test): wide lines, no colour codes."""
    console = rich_module().console.Console(
        width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200")),
        no_color=not sys.stdout.isatty(), highlight=False)
    for renderable in renderables:
        console.print(renderable)


def table(title: str | None, columns: list[str], rows: list[list[str]], right: set[str]) -> Any:
    """A rich table: ``columns`` named in ``right`` right-aligned, no vertical rules; every
    text is shown as written (no rich markup)."""
    rich = rich_module()
    # cells are data, not markup: "[alerts]" must print as written
    escape = rich.markup.escape
    # header underlined, no vertical rules: lines stay easy to read and to grep
    out = rich.table.Table(title=None if title is None else escape(title), title_justify="left", box=rich.box.SIMPLE_HEAD, show_edge=False,
                           pad_edge=False)
    for name in columns:
        out.add_column(escape(name), justify="right" if name in right else "left", no_wrap=name in ("id", "ts"))
    for row in rows:
        out.add_row(*(escape(cell) for cell in row))
    return out
