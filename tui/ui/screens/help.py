"""The ``?`` help screen: every key of the dashboard, as currently mapped (keymap included)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.ui.actions import HELP, bindings

HELP_TEXT = (
    "Filter (/): nodes and jobs by name; events by 'conn:NAME', 'type:ERROR' and words.\n"
    "Destructive actions (clear, remove, merge into, cancel) ask first: y confirms.\n"
    "ctrl+p lists the commands for the current selection."
)


class HelpScreen(ModalScreen[None]):
    """Lists key bindings grouped by where they apply."""

    BINDINGS = bindings(HELP)

    def __init__(self, groups: Iterable[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__(classes="dialog")
        self.groups = list(groups)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column()
        for group, rows in self.groups:
            table.add_row(f"[b]{group}[/b]", "")
            for key, description in rows:
                table.add_row("  " + key, description)
        with VerticalScroll(id="dialog-box") as box:
            box.border_title = "Keys (esc to close)"
            yield Static(table)
            yield Static(HELP_TEXT, classes="help-note")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
