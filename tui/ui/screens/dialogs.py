"""Small modal dialogs: confirmation (destructive actions) and a job's speed."""

from __future__ import annotations

from typing import TypeVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static

from tui.core.base.text import shown_lines
from tui.core.ops.jobs import parse_speed, speed_text
from tui.ui.actions import CONFIRM, DIALOG, bindings

T = TypeVar("T")


class DialogParts(Vertical):
    """Hidden: one widget of each kind the dialogs are made of, removed once mounted.

    Textual parses a widget class's default CSS the first time one of its widgets is mounted;
    for a dialog's kinds that is about 10 ms, which the first dialog an operator opened paid
    between the key and the frame. The dashboard composes this with itself (before its first
    frame, not during an event flood), so the first dialog costs what the later ones do."""

    def __init__(self) -> None:
        super().__init__(Label(""), Static(""), Input(compact=True), Button("", compact=True),
                         Checkbox("", compact=True),
                         Select([("", 0)], value=0, allow_blank=False, compact=True),
                         SelectionList[int](compact=True), VerticalScroll())
        self.display = False

    def on_mount(self) -> None:
        self.remove()


class FormDialog(ModalScreen[T | None]):
    """A dialog with a form: Enter in an input or the ``ok`` button submits (the subclass's
    ``_submit`` validates and dismisses with a value or shows why not); ``cancel``/Esc gives
    None."""

    def _submit(self) -> None:
        raise NotImplementedError

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


class ConfirmDialog(ModalScreen[bool]):
    """Asks before a destructive action; names what is affected. The back button has the focus,
    so a stray Enter never confirms: it takes ``y`` or choosing the confirm button.

    With ``no_label`` there are three answers: ``y`` True, ``n`` False (the other choice) and
    Esc None (change nothing)."""

    BINDINGS = bindings(DIALOG) + bindings(CONFIRM)

    def __init__(self, title: str, question: str, confirm_label: str, *,
                 back_label: str = "Back", no_label: str | None = None) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.question = question
        self.confirm_label = confirm_label
        self.back_label = back_label
        self.no_label = no_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = self.title_text
            # Names (bitmaps, files, QEMU's texts) may hold '[': never read them as markup.
            yield Static(escape("\n".join(shown_lines(self.question))), id="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.back_label} (esc)", id="cancel", compact=True)
                if self.no_label is not None:
                    yield Button(f"{self.no_label} (n)", id="no", compact=True)
                yield Button(f"{self.confirm_label} (y)", id="confirm", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        answers = {"confirm": True, "no": False}
        self.dismiss(answers.get(event.button.id or "",
                                 None if self.no_label is not None else False))

    def action_cancel(self) -> None:
        """Esc (and ``n`` in a yes/no dialog): change nothing."""
        self.dismiss(None if self.no_label is not None else False)

    def action_no(self) -> None:
        self.dismiss(False)

    def action_confirm(self) -> None:
        self.dismiss(True)


class InfoDialog(ModalScreen[None]):
    """Some lines to read (a job's details), in a scrollable panel; Esc or Enter closes."""

    DEFAULT_CSS = """
    InfoDialog #info { height: auto; max-height: 16; }
    """
    BINDINGS = bindings(DIALOG)

    def __init__(self, title: str, text: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = self.title_text
            with VerticalScroll(id="info"):
                yield Static(escape(self.text), id="info-text")
            with Horizontal(classes="buttons"):
                yield Button("Close (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SpeedDialog(FormDialog[int]):
    """A new speed limit for a job (0 = unlimited)."""

    BINDINGS = bindings(DIALOG)

    def __init__(self, job_id: str, current: int) -> None:
        super().__init__(classes="dialog")
        self.job_id = job_id
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = f"Speed of job {self.job_id}"
            yield Label("Bytes per second (0 = unlimited; 512K, 10M, ...):")
            yield Input(speed_text(self.current), id="speed", compact=True)
            yield Static("", id="reason", classes="reason")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Set", id="ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#speed", Input).focus()

    def _submit(self) -> None:
        text = self.query_one("#speed", Input).value
        try:
            speed = parse_speed(text)
        except ValueError as exc:
            self.query_one("#reason", Static).update(str(exc))
            return
        self.dismiss(speed)
