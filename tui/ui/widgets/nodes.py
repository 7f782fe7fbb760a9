"""Block nodes and, under each, its bitmaps: state word, dirty count (bytes and % of the disk),
granularity, persistence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from tui.core.base.format import human_bytes, percent
from tui.core.model.owners import short_name
from tui.core.model.state import Bitmap, ConnectionModel, Node
from tui.ui.actions import NODES, bindings
from tui.ui.roles import RendersState
from tui.ui.widgets.difftable import DiffTable, Row
from tui.ui.widgets.styled import STATE_CLASSES, styled

FIXED_COLUMNS = (
    ("name", "Node / bitmap", 16), ("state", "Dev/state", 12), ("dirty", "Size/dirty", 10),
    ("pct", "%", 4), ("gran", "Gran", 6), ("pers", "Pers", 4),
)  # "100%" and "64 KiB" are the widest percent and granularity
SEP = "\x1f"  # row keys: connection, node and bitmap joined by a character no name contains


@dataclass(frozen=True, slots=True)
class Selection:
    """What the cursor is on: a node, or a bitmap (``bitmap`` set) of that node."""

    connection: str
    node: str
    bitmap: str | None = None
    anonymous: bool = False


def node_key(conn: str, node: str) -> str:
    return SEP.join((conn, node, ""))


def bitmap_key(conn: str, node: str, name: str) -> str:
    return SEP.join((conn, node, "b:" + name))


def parse_key(key: str) -> Selection:
    conn, node, rest = key.split(SEP, 2)
    if rest.startswith("b:"):
        return Selection(conn, node, rest[2:])
    if rest.startswith("a:"):
        return Selection(conn, node, None, anonymous=True)
    return Selection(conn, node)


class NodesTable(DiffTable):
    """Nodes with their bitmaps indented beneath them."""

    COMPONENT_CLASSES = STATE_CLASSES
    # The actions run on the dashboard screen (``screen.<action>``): the registry builds the
    # bindings; ids let the config remap the keys; read-only hides them via the screen.
    BINDINGS = bindings(NODES)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.show_anonymous = True
        self.name_filter = ""
        # (connection, node) → (the node object, the view it was formatted for, its rows)
        self._row_cache: dict[tuple[str, str], tuple[Node, tuple[Any, ...], list[Row]]] = {}
        # Full image paths only where they fit; narrow terminals get the file name.
        self.full_paths = False
        # Narrow: characters left for the file column (the file name is fitted into them).
        self.file_width = 0

    def on_mount(self) -> None:
        self.border_title = "Nodes and bitmaps"
        for key, label, width in FIXED_COLUMNS:
            self.add_column(label, key=key, width=width)
        self.add_column("Driver · file", key="file")

    def on_resize(self) -> None:
        full = self.size.width >= 110
        fixed = sum(w + 2 * self.cell_padding for _, _, w in FIXED_COLUMNS)
        file_width = 0 if full else max(self.size.width - fixed - 2 * self.cell_padding, 8)
        if (full, file_width) != (self.full_paths, self.file_width):
            self.full_paths, self.file_width = full, file_width
            if isinstance(self.screen, RendersState):
                self.call_later(self.screen.render_state)

    @property
    def selection(self) -> Selection | None:
        key = self.selected_key
        return parse_key(key) if key else None

    def node_row(self, node: Node, prefix: str) -> tuple[Any, ...]:
        name = styled(self, prefix + node.node_name, "row--node")
        # a json: pseudo-filename left (null-co, nbd, ...: no image file) says nothing useful
        no_file = not node.file or node.file.startswith("json:")
        keep = self.full_paths or no_file
        file = "" if no_file else node.file if keep else node.file.rsplit("/", 1)[-1]
        detail = (f"{node.driver} · {file}" if file else node.driver) + (
            " (read-only)" if node.read_only else "")
        if self.file_width and len(detail) > self.file_width and not keep:
            # Too narrow for all of it: the file name matters most, and its end ("disk1.qcow2")
            # tells images apart; the driver only if there is room left.
            short = file + (" (ro)" if node.read_only else "")
            if len(short) > self.file_width:
                short = "…" + short[-(self.file_width - 1):]
            elif len(short) + len(node.driver) + 3 <= self.file_width:
                short = f"{node.driver} · {short}"
            detail = short
        return (name, node.device or "-", human_bytes(node.size), "", "", "", detail)

    def bitmap_row(self, node: Node, bm: Bitmap, last: bool) -> tuple[Any, ...]:
        branch = " └ " if last else " ├ "
        if bm.name is None:
            name: Text = styled(self, branch + "(anonymous)", "row--anonymous")
        else:
            # a policy's bitmaps differ only at the end of their names: show what they are
            name = Text(branch + short_name(bm.name))
        state = bm.state.value
        pers = "?" if bm.persistent is None else ("yes" if bm.persistent else "no")
        return (
            name,
            styled(self, state, f"state--{state}"),
            human_bytes(bm.count),
            percent(bm.count, node.size),
            human_bytes(bm.granularity),
            pers,
            "",
        )

    def rows_for(self, conns: Iterable[ConnectionModel], multi: bool) -> list[Row]:
        rows: list[Row] = []
        needle = self.name_filter.lower()
        cache: dict[tuple[str, str], tuple[Node, tuple[Any, ...], list[Row]]] = {}
        for conn in conns:
            prefix = f"{conn.name}:" if multi else ""
            # QEMU lists newest first; a stable sorted order keeps rows from jumping around.
            for node in sorted(conn.nodes.values(), key=lambda n: n.node_name):
                rows += self._node_rows(conn.name, node, prefix, needle, cache)
        # Only the nodes shown now stay cached.
        self._row_cache = cache
        return rows

    def _node_rows(self, conn_name: str, node: Node, prefix: str, needle: str,
                   cache: dict[tuple[str, str], tuple[Node, tuple[Any, ...], list[Row]]]
                   ) -> list[Row]:
        """A node's row and its bitmaps' rows. The reducer keeps an unchanged node the same
        object, so its rows are reused as they were (a refresh that changed 1 % of the rows
        formats 1 % of them)."""
        view = (prefix, needle, self.show_anonymous, self.full_paths, self.file_width)
        key = (conn_name, node.node_name)
        cached = self._row_cache.get(key)
        if cached is not None and cached[0] is node and cached[1] == view:
            cache[key] = cached
            return cached[2]
        rows: list[Row] = []
        bitmaps = sorted((b for b in node.bitmaps if self.show_anonymous or b.name is not None),
                         key=lambda b: (b.name is None, b.name or ""))
        if needle:
            node_hit = needle in node.node_name.lower() or needle in (node.device or "").lower()
            if not node_hit:
                bitmaps = [b for b in bitmaps if b.name and needle in b.name.lower()]
        if not needle or bitmaps or node_hit:
            rows.append((node_key(conn_name, node.node_name), self.node_row(node, prefix)))
            anon = 0
            for i, bm in enumerate(bitmaps):
                if bm.name is None:
                    bkey = SEP.join((conn_name, node.node_name, f"a:{anon}"))
                    anon += 1
                else:
                    bkey = bitmap_key(conn_name, node.node_name, bm.name)
                rows.append((bkey, self.bitmap_row(node, bm, i == len(bitmaps) - 1)))
        cache[key] = (node, view, rows)
        return rows

    def reset(self) -> None:
        """Forget every drawn row (a new theme restyles every cell)."""
        self._row_cache = {}
        super().reset()

    def show(self, conns: list[ConnectionModel], multi: bool) -> int:
        return self.sync_rows(self.rows_for(conns, multi))
