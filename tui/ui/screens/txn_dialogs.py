"""Dialogs of the transaction screens: confirm despite warnings, and a target name pattern."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from tui.core.txn.incremental import DEFAULT_PATTERN
from tui.ui.actions import DIALOG, bindings
from tui.ui.screens.dialogs import FormDialog


class AskDialog(FormDialog[str]):
    """Asks for one line of text (a file name, a pattern). Enter submits, Esc cancels."""

    BINDINGS = bindings(DIALOG)

    def __init__(self, title: str, label: str, value: str, ok_label: str, hint: str = "",
                 input_id: str = "value") -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.label = label
        self.value = value
        self.ok_label = ok_label
        self.hint = hint
        self.input_id = input_id

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = self.title_text
            yield Label(escape(self.label))
            yield Input(self.value, id=self.input_id, compact=True)
            yield Static(escape(self.hint), id="reason", classes="reason")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button(self.ok_label, id="ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#{self.input_id}", Input).focus()

    def _submit(self) -> None:
        text = self.query_one(f"#{self.input_id}", Input).value.strip()
        if not text:
            self.query_one("#reason", Static).update("nothing given")
            return
        self.dismiss(text)


class PatternDialog(AskDialog):
    """The target name pattern of an incremental backup of some drives (Enter keeps the
    default); names the drives left out and why."""

    def __init__(self, drives: list[str], pattern: str = DEFAULT_PATTERN, *,
                 skipped: list[str] | None = None) -> None:
        hint = "\n".join([*(skipped or []), "Enter: the composer (targets are created through "
                           "QEMU when sent; check, edit and send from there)."])
        super().__init__(f"Incremental backup of {', '.join(drives)}",
                         "Target images ({device} {node} {n} {dir}):", pattern, "Compose",
                         hint, "pattern")
        self.drives = drives
        self.skipped = skipped or []
