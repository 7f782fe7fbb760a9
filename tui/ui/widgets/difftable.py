"""A DataTable that is updated by diff: only rows and cells that changed are touched.

Live data (job progress, dirty counts) changes many times a second; rebuilding a table loses the
cursor and costs a full re-layout, so :meth:`DiffTable.sync_rows` adds, removes and updates single
cells, and reorders only when the row order really changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

# Private to Textual (DataTable keeps its row order in one); pinned by textual<9 in pyproject.
from textual._two_way_dict import TwoWayDict
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import DataTable

from tui.core.base.text import is_plain, shown

Row = tuple[str, tuple[Any, ...]]


def safe_cell(cell: Any) -> Any:
    """A cell as it may be drawn: strings as plain text (no markup), control characters
    escaped; a styled Text keeps its style."""
    if isinstance(cell, str):
        return Text(shown(cell))
    if isinstance(cell, Text) and not is_plain(cell.plain):
        return Text(shown(cell.plain), style=cell.style)
    return cell


class DiffTable(DataTable[Any]):
    """DataTable with :meth:`sync_rows`; rows are identified by string keys."""

    # Textual re-lays out the whole screen (and repaints all of it) whenever a widget's
    # scrollable size changes, so every row added to a table that already fills its box cost a
    # full-screen frame (a flood of new jobs: one every frame). Here only a change that can move
    # the box (it is not full, or the width changed) does; otherwise the scrollbars are updated
    # and the table repainted. (``_scroll_update`` is private to Textual: textual<9 is pinned.)
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    def watch_virtual_size(self, old: Size, new: Size) -> None:
        shown = self.scrollable_content_region.height
        if old.width == new.width and shown < old.height and shown < new.height:
            self._scroll_update(new)
            self.refresh()
        else:
            self.refresh(layout=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(*args, **kwargs)
        self._shown: dict[str, tuple[Any, ...]] = {}
        # The row tuples last given per key (a caller that reuses unchanged rows skips the diff)
        self._raw: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []
        # Cell writes done by the last sync (tests and the benchmark check diffs stay small).
        self.last_changes = 0
        self._reselect: str | None = None

    @property
    def selected_key(self) -> str | None:
        """Key of the row under the cursor, if any."""
        if not self._order or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # the cursor can briefly point past the end after removals
            return None
        return key.value

    def select_key(self, key: str) -> bool:
        """Move the cursor to the row with this key; False if there is none."""
        if key not in self._shown:
            return False
        self.move_cursor(row=self.get_row_index(key), animate=False, scroll=True)
        return True

    def sync_rows(self, rows: Sequence[Row]) -> int:
        """Make the table show exactly ``rows`` (key, cells) in this order. Returns cells written."""
        keep = self._reselect or self.selected_key
        self._reselect = None
        wanted = dict(rows)
        changes = 0
        columns = list(self.columns)
        removed = [k for k in self._shown if k not in wanted]
        for key in removed:
            self.remove_row(key)
            del self._shown[key]
            self._raw.pop(key, None)
            changes += 1
        added = False
        for key, raw in rows:
            if self._raw.get(key) is raw:
                continue  # the very row drawn last time (a caller reusing unchanged rows)
            self._raw[key] = raw
            cells = tuple(safe_cell(c) for c in raw)
            old = self._shown.get(key)
            if old is None:
                self.add_row(*cells, key=key)
                added = True
                changes += len(cells)
            elif old != cells:
                for col, (a, b) in enumerate(zip(old, cells, strict=True)):
                    if a != b:
                        # Auto-width columns (the last, free-text one) may need to grow.
                        auto = self.columns[columns[col]].auto_width
                        self.update_cell(key, columns[col], b, update_width=auto)
                        changes += 1
            self._shown[key] = cells
        order = [k for k, _ in rows]
        # Our own record of the order is enough unless rows came or went (added ones go last).
        if (added or removed or order != self._order) and order != self._current_order():
            self._reorder(order)
        self._order = order
        if keep is not None and keep in self._shown and self.selected_key != keep:
            self.select_key(keep)
        self.last_changes = changes
        return changes

    def reset(self) -> None:
        """Forget every row (the next sync writes all cells again, e.g. after a theme change)."""
        keep = self.selected_key
        self.clear()
        self._shown.clear()
        self._raw.clear()
        self._order = []
        self._reselect = keep

    def _current_order(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]

    def _reorder(self, order: list[str]) -> None:
        # DataTable.sort() cannot sort by row key; set the row locations directly, as sort() does
        # (private DataTable state: _row_locations and _update_count; textual<9 is pinned).
        keys = {str(k.value): k for k in self.rows}
        self._row_locations = TwoWayDict({keys[k]: i for i, k in enumerate(order)})
        self._update_count += 1
        self.refresh()

