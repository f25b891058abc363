"""A table fed whole row sets by key, that repaints only the rows that changed.

``plan_update`` (pure) compares the shown rows with the new ones; ``KeyedTable.apply``
carries the plan out.  Textual's DataTable re-renders every visible cell after any
cell update (its render caches are keyed by a global update count), which with 1,000
routes costs hundreds of milliseconds per refresh on a slow machine; this widget draws
each row as one pre-formatted line (Textual's line API) and refreshes only the lines
that changed, so an update costs about the rows it touches.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Row = tuple[str, ...]
#: Widest a column grows (the last column is never cut: it holds reasons and explanations).
MAX_COLUMN = 40
GAP = 2


@dataclass(slots=True)
class Plan:
    """How to go from the shown rows to the new ones."""

    rebuild: bool = False
    append: list[Hashable] = field(default_factory=list)
    cells: list[tuple[Hashable, int, str]] = field(default_factory=list)


def plan_update(shown: Mapping[Any, Row], new: Mapping[Any, Row]) -> Plan:
    """Cell updates when the keys keep their order (new keys only appended at the end);
    a rebuild when keys were removed or reordered.  Equal inputs give an empty plan."""
    old_keys, new_keys = list(shown), list(new)
    if new_keys[: len(old_keys)] != old_keys:
        return Plan(rebuild=True)
    plan = Plan(append=new_keys[len(old_keys):])
    for key in old_keys:
        before, after = shown[key], new[key]
        if before != after:
            plan.cells.extend((key, i, v) for i, (a, v) in enumerate(zip(before, after)) if a != v)
    return plan


class KeyedTable(ScrollView, can_focus=True):
    """Rows by key with a row cursor: arrows / page keys / Home / End move it, Enter or a
    click on the highlighted row selects it."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; background: $surface; }
    KeyedTable > .keyed-table--header { text-style: bold; background: $panel; color: $text; }
    KeyedTable > .keyed-table--odd { background: $surface-lighten-1; }
    KeyedTable > .keyed-table--cursor { background: $block-cursor-blurred-background; }
    KeyedTable:focus > .keyed-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold; }
    """
    COMPONENT_CLASSES = {"keyed-table--header", "keyed-table--odd", "keyed-table--cursor"}
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False), Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False), Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "home", show=False), Binding("end", "end", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=False, repaint=False)
    """Index of the highlighted row."""

    class RowHighlighted(Message):
        """The cursor moved to the row ``key``."""

        def __init__(self, table: KeyedTable, key: Hashable) -> None:
            super().__init__()
            self.table, self.key = table, key

    class RowSelected(Message):
        """Enter (or a click on the highlighted row) on the row ``key``."""

        def __init__(self, table: KeyedTable, key: Hashable) -> None:
            super().__init__()
            self.table, self.key = table, key

    def __init__(self, columns: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = tuple(columns)
        #: The rows shown, key -> cells, in display order.
        self.shown: dict[Hashable, Row] = {}
        self._keys: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._widths = [cell_len(c) for c in self.columns]
        self._lines: dict[Hashable, str] = {}

    # ------------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        return len(self._keys)

    def apply(self, rows: Mapping[Any, Row]) -> Plan:
        """Show ``rows`` (key -> cells, in display order); the cursor stays on its row.

        Keys may be of any (hashable) type: ``Mapping[Any, ...]`` because a mapping is
        invariant in its key type, so ``Mapping[Hashable, ...]`` would refuse a ``dict[str, ...]``."""
        plan = plan_update(self.shown, rows)
        selected = self.selected_key()
        self.shown = dict(rows)
        widened = self._widen(rows.values() if plan.rebuild else
                              [rows[k] for k in plan.append] + [rows[k] for k, _, _ in plan.cells])
        if plan.rebuild or widened:
            self._keys = list(rows)
            self._index = {k: i for i, k in enumerate(self._keys)}
            self._lines.clear()
            self._resize()
            if selected in self._index:
                self.cursor_row = self._index[selected]
            self.cursor_row = min(self.cursor_row, max(0, len(self._keys) - 1))
            self.refresh()
            return plan
        for key, _, _ in plan.cells:
            if self._lines.pop(key, None) is not None:
                self.refresh_line(self._index[key] + 1)
        if plan.append:
            for key in plan.append:
                self._index[key] = len(self._keys)
                self._keys.append(key)
            self._resize()
            self.refresh_lines(len(self._keys) - len(plan.append) + 1, len(plan.append))
        return plan

    def _widen(self, rows) -> bool:
        """Grow column widths to fit ``rows`` (never shrink: columns do not jump)."""
        widened = False
        last = len(self._widths) - 1
        for row in rows:
            for i, cell in enumerate(row):
                width = cell_len(cell)
                if width > self._widths[i] and (i == last or self._widths[i] < MAX_COLUMN):
                    self._widths[i] = width if i == last else min(width, MAX_COLUMN)
                    widened = True
        return widened

    def _resize(self) -> None:
        self.virtual_size = Size(sum(self._widths) + GAP * len(self._widths), len(self._keys) + 1)

    def _format(self, cells: Sequence[str]) -> str:
        return " " + (" " * GAP).join(set_cell_size(c, w) for c, w in zip(cells, self._widths))

    # ------------------------------------------------------------------ rendering

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            text, style = self._format(self.columns), self.get_component_rich_style("keyed-table--header")
        else:
            index = scroll_y + y - 1
            if index >= len(self._keys):
                return Strip.blank(width, self.rich_style)
            key = self._keys[index]
            line = self._lines.get(key)
            if line is None:
                line = self._lines[key] = self._format(self.shown[key])
            text = line
            if index == self.cursor_row:
                style = self.get_component_rich_style("keyed-table--cursor")
            elif index % 2:
                style = self.rich_style + self.get_component_rich_style("keyed-table--odd")
            else:
                style = self.rich_style
        return Strip([Segment(text, style)]).crop_extend(scroll_x, scroll_x + width, style)

    # ------------------------------------------------------------------ cursor

    def selected_key(self) -> Hashable | None:
        """The key of the row under the cursor, or None when the table is empty."""
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    def get_row_index(self, key: Hashable) -> int:
        """The display index of ``key``'s row.  Raises KeyError for an unknown key."""
        return self._index[key]

    def move_cursor(self, *, row: int) -> None:
        """Put the cursor on row ``row`` (clamped to the rows)."""
        self.cursor_row = max(0, min(row, len(self._keys) - 1))

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, max(0, len(self._keys) - 1)))

    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        # keep the cursor in view below the header line
        self.scroll_to_region(Region(0, new + 1, 1, 1), spacing=Spacing(1, 0, 0, 0), animate=False, immediate=True)
        if self.selected_key() is not None:
            self.post_message(self.RowHighlighted(self, self.selected_key()))

    def action_cursor(self, step: int) -> None:
        self.cursor_row += step

    def action_page(self, direction: int) -> None:
        self.cursor_row += direction * max(1, self.size.height - 2)

    def action_home(self) -> None:
        self.cursor_row = 0

    def action_end(self) -> None:
        self.cursor_row = len(self._keys) - 1

    def action_select(self) -> None:
        key = self.selected_key()
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return
        index = self.scroll_offset.y + event.y - 1
        if 0 <= index < len(self._keys):
            again = index == self.cursor_row
            self.cursor_row = index
            if again or event.chain >= 2:
                self.action_select()
