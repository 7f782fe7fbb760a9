"""The fleet: one row per connection with its state word, QEMU version and counts."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.core.model.state import ConnectionModel, FleetState
from tui.core.qmp.served import OPERATOR
from tui.ui.widgets.difftable import DiffTable
from tui.ui.widgets.styled import STATE_CLASSES, styled


class ConnectionsTable(DiffTable):
    """Connections table; the highlighted row chooses which connection the other tables show."""

    COMPONENT_CLASSES = STATE_CLASSES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each connection's model and the row made from it: the store keeps an unchanged
        # connection the same object, so a fleet of 200 formats only the rows that changed.
        self._built: dict[str, tuple[ConnectionModel, tuple[Any, ...]]] = {}

    def on_mount(self) -> None:
        self.border_title = "Connections"
        for key, label, width in (
            ("name", "Name", 12), ("state", "State", 12), ("qemu", "QEMU", 7),
            ("nodes", "Nodes", 5), ("bitmaps", "Bitmaps", 7), ("jobs", "Jobs", 4),
            ("error", "Last error", None),
        ):
            self.add_column(label, key=key, width=width)

    def row_for(self, conn: ConnectionModel) -> tuple[Any, ...]:
        state = styled(self, conn.state.value, f"link--{conn.state.value}")
        notes = []
        if conn.via_service:  # an operator's is the usual case: the narrow column says less
            notes.append("via service" if conn.service_role == OPERATOR else
                         f"via service ({conn.service_role})")
        if conn.slow_poll is not None:  # off screen or quiet: say how stale it may be
            notes.append(f"refreshed every {conn.slow_poll:g} s (off screen)")
        if conn.error:
            error = styled(self, conn.error, "text--error")
        else:
            error = Text("; ".join(notes))
        return (
            conn.name,
            state,
            str(conn.version) if conn.version else "-",
            str(len(conn.nodes)),
            str(conn.bitmap_count()),
            str(len(conn.active_jobs)),
            error,
        )

    def show(self, fleet: FleetState) -> int:
        built: dict[str, tuple[ConnectionModel, tuple[Any, ...]]] = {}
        for conn in fleet.connections.values():
            old = self._built.get(conn.name)
            built[conn.name] = old if old is not None and old[0] is conn else (conn, self.row_for(conn))
        self._built = built
        return self.sync_rows([(name, row) for name, (_conn, row) in built.items()])

    def reset(self) -> None:
        """Forget every drawn row (a new theme restyles every cell)."""
        self._built = {}
        super().reset()
