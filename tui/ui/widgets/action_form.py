"""A form editing one transaction action; its choices come from the live state.

Nodes, devices and bitmaps offered in the selects are read from the connection's model when the
form is (re)built, so the operator picks what exists instead of typing names. Every edit posts
:class:`ActionForm.Edited` with the new action; invalid input (a non-number speed) is passed on
as typed so the pre-flight checks explain it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select

from tui.core.base.format import human_bytes
from tui.core.model.state import ConnectionModel
from tui.core.txn.files import DATA_KEYS
from tui.core.txn.model import (
    ACTION_TYPES,
    BACKUP_TYPES,
    BITMAP_MODES,
    DRIVE_BACKUP_MODES,
    SYNC_MODES,
    Action,
)
from tui.ui.widgets.checkbox import TextCheckbox


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    kind: str  # select | text | int | bool | sources
    choices: tuple[tuple[str, str], ...] = ()
    # Said beside a value that is not among the choices.
    absent: str = "not in the live state"


def _node_choices(model: ConnectionModel, devices: bool = True) -> list[tuple[str, str]]:
    out = []
    for n in sorted(model.nodes.values(), key=lambda n: (n.device is None, n.device or "",
                                                       n.node_name)):
        if devices and n.device:
            out.append((f"{n.device} (drive, node {n.node_name})", n.device))
        out.append((f"{n.node_name} ({n.driver})", n.node_name))
    return out


def _bitmap_choices(model: ConnectionModel, node_ref: Any) -> list[tuple[str, str]]:
    node = model.find_node(node_ref) if isinstance(node_ref, str) else None
    if node is None:
        return []
    return [(f"{b.name} ({b.state.value}, {human_bytes(b.count)} dirty)", str(b.name))
            for b in node.named_bitmaps]


def fields_for(action: Action, model: ConnectionModel) -> list[Field]:
    """The form's fields for this action type, with choices from ``model``."""
    d = action.data
    t = action.type
    nodes = tuple(_node_choices(model))
    if t in BACKUP_TYPES:
        fs = [
            Field("device", "select", nodes),
            Field("job-id", "text"),
            Field("sync", "select", tuple((s, s) for s in SYNC_MODES)),
            Field("bitmap", "select", tuple(_bitmap_choices(model, d.get("device")))),
            Field("bitmap-mode", "select", tuple((m, m) for m in BITMAP_MODES)),
        ]
        if t == "drive-backup":
            fs += [Field("target", "text"), Field("format", "text"),
                   Field("mode", "select", tuple((m, m) for m in DRIVE_BACKUP_MODES))]
        else:
            # The composer creates a planned target node when it sends the transaction.
            fs.append(Field("target", "select", tuple(_node_choices(model, devices=False)),
                            absent="created when sent"))
        fs.append(Field("speed", "int"))
        return fs
    node_f = Field("node", "select", nodes)
    bitmaps = tuple(_bitmap_choices(model, d.get("node")))
    if t == "block-dirty-bitmap-add":
        return [node_f, Field("name", "text"), Field("granularity", "int"),
                Field("persistent", "bool"), Field("disabled", "bool")]
    if t == "block-dirty-bitmap-merge":
        return [node_f, Field("target", "select", bitmaps), Field("bitmaps", "sources")]
    return [node_f, Field("name", "select", bitmaps)]


def convert(action: Action, new_type: str, model: ConnectionModel) -> Action:
    """The action changed to another type, keeping what still applies."""
    keys = DATA_KEYS.get(new_type, {})
    data = {k: v for k, v in action.data.items() if k in keys}
    if new_type in BACKUP_TYPES:
        if "device" not in data and "node" in action.data:
            data["device"] = action.data["node"]
        data.setdefault("sync", "full")
        if new_type == "blockdev-backup":
            data.pop("target", None)
    elif "node" not in data and "device" in action.data:
        data["node"] = action.data["device"]
    if new_type == "block-dirty-bitmap-merge":
        data.setdefault("bitmaps", [])
    return Action(new_type, data)


def parse_sources(text: str) -> list[Any]:
    """``"a, disk1/b"`` → ``["a", {"node": "disk1", "name": "b"}]``."""
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        node, sep, name = part.partition("/")
        out.append({"node": node, "name": name} if sep else part)
    return out


def format_sources(sources: Any) -> str:
    if not isinstance(sources, list):
        return ""
    return ", ".join(f"{s.get('node')}/{s.get('name')}" if isinstance(s, dict) else str(s)
                     for s in sources)


class ActionForm(VerticalScroll):
    """Edits one action. Call :meth:`show` to load an action; listen for :class:`Edited`."""

    DEFAULT_CSS = """
    ActionForm { height: 1fr; }
    ActionForm .row { height: auto; }
    ActionForm .row Label { width: 13; }
    ActionForm .row Input, ActionForm .row Select { width: 1fr; }
    ActionForm .empty { color: $text-muted; padding: 1; }
    """

    class Edited(Message):
        """The operator changed the action."""

        def __init__(self, action: Action) -> None:
            super().__init__()
            self.action = action

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action: Action | None = None
        self.model: ConnectionModel | None = None
        self._fields: list[Field] = []

    async def show(self, action: Action | None, model: ConnectionModel) -> None:
        """(Re)build the form for ``action`` with choices from ``model``."""
        self.action = action
        self.model = model
        await self.remove_children()
        if action is None:
            self._fields = []
            await self.mount(Label("No action selected: press a to add one.", classes="empty"))
            return
        self._fields = fields_for(action, model)
        rows: list[Widget] = [self._row("type", Select([(t, t) for t in ACTION_TYPES],
                                                       value=action.type, allow_blank=False,
                                                       id="f-type", compact=True))]
        for f in self._fields:
            rows.append(self._row(f.key, self._widget(f, action.data.get(f.key))))
        await self.mount_all(rows)

    def _row(self, label: str, widget: Widget) -> Horizontal:
        return Horizontal(Label(label), widget, classes="row")

    def _widget(self, f: Field, value: Any) -> Widget:
        wid = f"f-{f.key}"
        if f.kind == "select":
            choices = list(f.choices)
            if value is not None and str(value) not in {v for _, v in choices}:
                choices.append((f"{value} ({f.absent})", str(value)))
            return Select(choices, value=str(value) if value is not None else Select.NULL,
                          allow_blank=True, id=wid, prompt="(none)", compact=True)
        if f.kind == "bool":
            return TextCheckbox(value=bool(value), id=wid, compact=True)
        if f.kind == "sources":
            return Input(format_sources(value), placeholder="bitmap, node/bitmap, ...", id=wid,
                         compact=True)
        return Input("" if value is None else str(value), id=wid,
                     type="text", placeholder="(none)", compact=True)

    def collect(self) -> Action | None:
        """The action as the form shows it now."""
        if self.action is None:
            return None
        type_sel = self.query("#f-type").first(Select)
        new_type = str(type_sel.value)
        data: dict[str, Any] = {}
        for f in self._fields:
            found = self.query(f"#f-{f.key}")
            if not found:
                continue
            w = found.first()
            value: Any = None
            if isinstance(w, Select):
                value = None if w.value in (Select.NULL, Select.BLANK) else w.value
            elif isinstance(w, Checkbox):
                value = True if w.value else None
            elif isinstance(w, Input):
                text = w.value.strip()
                if f.kind == "sources":
                    value = parse_sources(text)
                elif f.kind == "int" and text:
                    try:
                        value = int(text)
                    except ValueError:
                        value = text  # the checks say what is wrong with it
                else:
                    value = text or None
            if value is not None:
                data[f.key] = value
        # keys the form does not show (e.g. auto-finalize from a file) are kept
        shown = {f.key for f in self._fields}
        for k, v in self.action.data.items():
            if k not in shown:
                data[k] = v
        action = Action(self.action.type, data)
        if new_type != self.action.type and self.model is not None:
            action = convert(action, new_type, self.model)
        return action

    async def _changed(self) -> None:
        new = self.collect()
        if new is None or self.action is None or new == self.action:
            return
        old = self.action
        new = self._follow_node(old, new)
        self.action = new
        self.post_message(self.Edited(new))
        # Choices depend on the type and on the chosen node: rebuild when those change.
        if (new.type != old.type or new.data.get("device") != old.data.get("device")
                or new.data.get("node") != old.data.get("node")) and self.model is not None:
            await self.show(new, self.model)

    def _follow_node(self, old: Action, new: Action) -> Action:
        """A bitmap chosen on the previous node means nothing on a new one: take the new
        node's first bitmap instead (or none)."""
        key = "device" if new.is_backup else "node"
        if self.model is None or new.data.get(key) == old.data.get(key):
            return new
        names = [v for _, v in _bitmap_choices(self.model, new.data.get(key))]
        fields: tuple[str, ...] = ("bitmap",) if new.is_backup else ("name", "target")
        if new.type == "block-dirty-bitmap-add":
            fields = ()
        changes: dict[str, Any] = {}
        for f in fields:
            if new.data.get(f) is not None and new.data.get(f) not in names:
                changes[f] = names[0] if names else None
        return new.with_data(**changes) if changes else new

    async def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        await self._changed()

    async def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        await self._changed()

    async def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        await self._changed()
