"""Dialogs of the transaction screens: confirm despite warnings, and a target name pattern."""

from __future__ import annotations

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DEFAULT_PATTERN = "{dir}/{device}-incr-{n}.qcow2"


class ConfirmScreen(ModalScreen[bool]):
    """Asks once, showing why (the warnings). Enter/y confirms, Esc/n cancels."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 76; height: auto; max-height: 90%; border: thick $warning;
                               background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Send anyway", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "Cancel", id="confirm.no"),
    ]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            yield Static("\n".join(escape(line) for line in self.lines), id="confirm-lines")
            with Horizontal():
                yield Button("Send anyway (y)", id="yes", variant="warning")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        # a stray Enter never confirms: Cancel has the focus
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AskDialog(ModalScreen[str | None]):
    """Asks for one line of text (a file name, a pattern). Enter submits, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

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

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PatternDialog(AskDialog):
    """The target name pattern of an incremental backup of some drives."""

    def __init__(self, drives: list[str], pattern: str = DEFAULT_PATTERN) -> None:
        super().__init__(f"Incremental backup of {', '.join(drives)}",
                         "Target images ({device} {node} {n} {dir}):", pattern, "Compose",
                         "Opens the composer: check, edit and send from there.", "pattern")
        self.drives = drives
