"""Transactions from the dashboard: open the composer, or start an incremental backup of the
selected drive (or of every drive of the connection) with a target name pattern.

A mixin for the dashboard screen plus palette commands (``transaction: ...``) registered with
:mod:`tui.ui.palette`. Composing is allowed in read-only mode (to prepare, check and save); the
composer refuses to send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tui.ops.common import refused
from tui.ui.palette import PaletteCommand, register_commands
from tui.ui.screens.composer import ComposerScreen
from tui.ui.screens.txn_dialogs import PatternDialog

if TYPE_CHECKING:
    from textual.app import App

    from tui.model.store import Store
    from tui.ops.common import Outcome
    from tui.ui.widgets.nodes import NodesTable


class TransactionActions:
    """Mixin for the dashboard: ``action_compose``, ``action_backup_selected``,
    ``action_backup_all``."""

    if TYPE_CHECKING:  # provided by the dashboard screen
        fleet: Any
        store: Store
        selected_connection: str | None
        app: App[Any]

        @property
        def nodes_table(self) -> NodesTable: ...

        def report(self, outcome: Outcome) -> None: ...

    def _txn_connection(self) -> str | None:
        sel = self.nodes_table.selection
        name = sel.connection if sel else self.selected_connection
        if self.fleet is None or name is None or name not in self.fleet.connections:
            self.report(refused("no connection to compose a transaction for"))
            return None
        return name

    def action_compose(self) -> None:
        """Open an empty composer on the selected connection."""
        name = self._txn_connection()
        if name is not None:
            self.app.push_screen(ComposerScreen(self.fleet, name))

    def _backup_of(self, name: str, drives: list[str]) -> None:
        def picked(pattern: str | None) -> None:
            if pattern:
                self.app.push_screen(ComposerScreen.for_incremental(self.fleet, name, drives,
                                                                    pattern))

        self.app.push_screen(PatternDialog(drives), picked)

    def action_backup_selected(self) -> None:
        """An incremental backup of the selected node's drive (composer, grouped)."""
        sel = self.nodes_table.selection
        name = self._txn_connection()
        if name is None:
            return
        node = self.store.connection(name).node(sel.node) if sel else None
        if node is None:
            self.report(refused("select a drive (a node row) first"))
            return
        self._backup_of(name, [node.device or node.node_name])

    def action_backup_all(self) -> None:
        """An incremental backup of every drive with a bitmap: a VM-wide point in time."""
        name = self._txn_connection()
        if name is None:
            return
        model = self.store.connection(name)
        drives = sorted(n.device for n in model.nodes.values() if n.device and n.named_bitmaps)
        if not drives:
            self.report(refused(f"no drive of {name} has a bitmap: start a chain first"))
            return
        self._backup_of(name, drives)


@register_commands
def transaction_commands(app: Any) -> list[PaletteCommand]:
    """Palette entries while the dashboard is the current screen."""
    screen = getattr(app, "screen", None)
    if not isinstance(screen, TransactionActions):
        return []
    return [
        PaletteCommand("transaction: Compose", "open the transaction composer",
                       screen.action_compose),
        PaletteCommand("transaction: Incremental backup of this drive",
                       "compose an incremental backup of the selected drive",
                       screen.action_backup_selected),
        PaletteCommand("transaction: Incremental backup of every drive",
                       "a VM-wide point in time: every drive with a bitmap, grouped",
                       screen.action_backup_all),
    ]
