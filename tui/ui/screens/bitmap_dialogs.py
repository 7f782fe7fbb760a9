"""Dialogs that compose bitmap requests: add (name, granularity, persistent, disabled) and merge
(sources from any node of the connection). They validate live with the same checks the
operation runs, and show the reason."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, SelectionList, Static

from tui.core.base.format import human_bytes
from tui.core.model.state import ConnectionModel, Node
from tui.core.ops import bitmaps as ops
from tui.core.ops.bitmaps import BitmapRef
from tui.ui.actions import DIALOG, bindings
from tui.ui.screens.dialogs import FormDialog
from tui.ui.widgets.checkbox import TextCheckbox


@dataclass(frozen=True, slots=True)
class AddRequest:
    name: str
    granularity: int | None
    persistent: bool
    disabled: bool


class AddBitmapDialog(FormDialog[AddRequest]):
    """New bitmap on one node.

    One instance serves every opening (the dashboard installs it): composing its
    widgets took most of the time from the key to the dialog on screen, so :meth:`for_node`
    empties the form for the next node instead."""

    BINDINGS = bindings(DIALOG)

    def __init__(self, node: Node) -> None:
        super().__init__(classes="dialog")
        self.node = node

    def compose(self) -> ComposeResult:
        presets = [human_bytes(g) for g in ops.GRANULARITY_PRESETS]
        with Vertical(id="dialog-box") as box:
            box.border_title = self._title()
            yield Label("Name")
            yield Input(id="name", placeholder="e.g. bitmap0", compact=True)
            yield Label("Granularity (empty: the image's cluster size)")
            yield Input(id="granularity", placeholder=", ".join(presets) + ", or 65536 …",
                        suggester=SuggestFromList(presets, case_sensitive=False), compact=True)
            yield TextCheckbox("persistent (stored in the qcow2 image)", id="persistent", compact=True)
            yield TextCheckbox("disabled (not recording)", id="disabled", compact=True)
            yield Static("", id="reason", classes="reason")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Add", id="ok", variant="primary", compact=True)

    def _title(self) -> str:
        return f"New bitmap on {self.node.node_name}"

    def for_node(self, node: Node) -> AddBitmapDialog:
        """The dialog, emptied, for a new bitmap on ``node`` (nothing of the last opening stays)."""
        self.node = node
        if self.is_mounted:
            self.query_one("#dialog-box").border_title = self._title()
            for input_id in ("#name", "#granularity"):
                self.query_one(input_id, Input).value = ""
            for box_id in ("#persistent", "#disabled"):
                self.query_one(box_id, Checkbox).value = False
            reason = self.query_one("#reason", Static)
            reason.update("")
            reason.set_class(False, "-refusal", "-warning")
        return self

    def on_screen_resume(self) -> None:
        self.query_one("#name", Input).focus()

    def request(self) -> tuple[AddRequest | None, str | None, str | None]:
        """(request, refusal, warning) from the current fields."""
        name = self.query_one("#name", Input).value.strip()
        typed = self.query_one("#granularity", Input).value.strip()
        granularity: int | None = None
        if typed:
            try:
                granularity = ops.parse_granularity(typed)
            except ValueError as exc:
                return None, str(exc), None
        persistent = self.query_one("#persistent", Checkbox).value
        disabled = self.query_one("#disabled", Checkbox).value
        check = ops.check_add(self.node, name, granularity, persistent)
        if not check.ok:
            return None, check.refusal, None
        return AddRequest(name, granularity, persistent, disabled), None, check.warning

    def _validate(self) -> None:
        _, refusal, warning = self.request()
        name = self.query_one("#name", Input).value.strip()
        # An empty name at the start is not worth a red line; it is refused on submit.
        text = (refusal if name or refusal != "the bitmap name cannot be empty" else "") or warning or ""
        reason = self.query_one("#reason", Static)
        reason.update(text)
        reason.set_class(bool(refusal and text), "-refusal")
        reason.set_class(bool(warning and not refusal), "-warning")

    def on_input_changed(self) -> None:
        self._validate()

    def on_checkbox_changed(self) -> None:
        self._validate()

    def _submit(self) -> None:
        req, refusal, _ = self.request()
        if req is None:
            reason = self.query_one("#reason", Static)
            reason.update(refusal or "")
            reason.set_class(True, "-refusal")
            return
        self.dismiss(req)


class MergeDialog(FormDialog[list[BitmapRef]]):
    """Pick the source bitmaps (from any node of this connection) to merge into the target."""

    BINDINGS = bindings(DIALOG)

    def __init__(self, conn: ConnectionModel, target: BitmapRef) -> None:
        super().__init__(classes="dialog")
        self.conn = conn
        self.target = target

    def compose(self) -> ComposeResult:
        choices: list[tuple[str, str]] = []
        for node in self.conn.nodes.values():
            for bm in node.named_bitmaps:
                ref = BitmapRef(node.node_name, bm.name or "")
                if ref == self.target:
                    continue
                choices.append((f"{ref}  ({bm.state.value}, {human_bytes(bm.count)})", str(ref)))
        with Vertical(id="dialog-box") as box:
            box.border_title = f"Merge into {self.target.name} on {self.target.node}"
            yield Label("Sources (space to pick, any node):")
            yield SelectionList[str](*choices, id="sources", compact=True)
            yield Static("", id="reason", classes="reason")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Merge…", id="ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#sources", SelectionList).focus()

    def chosen(self) -> list[BitmapRef]:
        picked = self.query_one("#sources", SelectionList).selected
        out = []
        for text in picked:
            node, _, name = str(text).partition("/")
            out.append(BitmapRef(node, name))
        return out

    def _submit(self) -> None:
        sources = self.chosen()
        check = ops.check_merge(self.conn, self.target, sources)
        if not check.ok:
            reason = self.query_one("#reason", Static)
            reason.update(check.refusal or "")
            reason.set_class(True, "-refusal")
            return
        self.dismiss(sources)
