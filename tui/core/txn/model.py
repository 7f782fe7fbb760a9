"""A QMP ``transaction`` as data: actions ``{type, data}`` and a completion mode.

The shape is QMP's own (``actions: [{type, data}]``, ``properties: {completion-mode}``) so what
the operator edits, what is saved and what is sent are the same thing. No I/O, no Textual.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

INDIVIDUAL = "individual"
GROUPED = "grouped"
COMPLETION_MODES = (INDIVIDUAL, GROUPED)

BACKUP_TYPES = frozenset({"drive-backup", "blockdev-backup"})
BITMAP_TYPES = frozenset(
    {
        "block-dirty-bitmap-add",
        "block-dirty-bitmap-clear",
        "block-dirty-bitmap-enable",
        "block-dirty-bitmap-disable",
        "block-dirty-bitmap-merge",
        "block-dirty-bitmap-remove",
    }
)
# What the composer offers; other TransactionActionKind members load from files and are sent as
# they are, but only these are checked in depth.
ACTION_TYPES = tuple(sorted(BACKUP_TYPES)) + tuple(sorted(BITMAP_TYPES))

SYNC_MODES = ("full", "top", "incremental", "bitmap", "none")
BITMAP_MODES = ("on-success", "always", "never")
DRIVE_BACKUP_MODES = ("existing", "absolute-paths")


@dataclass(frozen=True, slots=True)
class Action:
    """One transaction action: QMP's ``{"type": ..., "data": {...}}``."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_backup(self) -> bool:
        return self.type in BACKUP_TYPES

    @property
    def is_bitmap(self) -> bool:
        return self.type in BITMAP_TYPES

    @property
    def job_id(self) -> str | None:
        """The job this action starts (backups only), as given."""
        jid = self.data.get("job-id")
        return jid if isinstance(jid, str) and jid else None

    def with_data(self, **changes: Any) -> Action:
        """A copy with some data keys set (``None`` removes a key)."""
        data = dict(self.data)
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return Action(self.type, data)

    def to_qmp(self) -> dict[str, Any]:
        return {"type": self.type, "data": copy.deepcopy(self.data)}

    def summary(self) -> str:
        """One line for lists: ``drive-backup drive0 incremental bitmap0 → d0-incr-1.qcow2``."""
        d = self.data
        if self.is_backup:
            parts = [self.type, str(d.get("device", "?")), str(d.get("sync", "?"))]
            if d.get("bitmap"):
                parts.append(str(d["bitmap"]))
            if d.get("bitmap-mode"):
                parts.append(f"({d['bitmap-mode']})")
            parts.append(f"→ {d.get('target', '?')}")
            return " ".join(parts)
        if self.type == "block-dirty-bitmap-merge":
            srcs = ", ".join(_source_label(s) for s in d.get("bitmaps") or []) or "(no source)"
            return f"merge {srcs} → {d.get('node', '?')}/{d.get('target', '?')}"
        if self.is_bitmap:
            verb = self.type.removeprefix("block-dirty-bitmap-")
            return f"bitmap {verb} {d.get('node', '?')}/{d.get('name', '?')}"
        return self.type


def _source_label(src: Any) -> str:
    if isinstance(src, dict):
        return f"{src.get('node', '?')}/{src.get('name', '?')}"
    return str(src)


@dataclass(frozen=True, slots=True)
class Transaction:
    """Actions plus ``completion-mode``; ``to_qmp()`` is exactly the ``transaction`` arguments."""

    actions: tuple[Action, ...] = ()
    completion_mode: str = INDIVIDUAL

    def to_qmp(self) -> dict[str, Any]:
        """The ``transaction`` command's arguments. ``properties`` is only sent when grouped, so
        an individual transaction is byte-for-byte what the documentation shows."""
        args: dict[str, Any] = {"actions": [a.to_qmp() for a in self.actions]}
        if self.completion_mode != INDIVIDUAL:
            args["properties"] = {"completion-mode": self.completion_mode}
        return args

    def to_document(self) -> dict[str, Any]:
        """The file shape: like :meth:`to_qmp` but always naming the completion mode."""
        return {
            "actions": [a.to_qmp() for a in self.actions],
            "properties": {"completion-mode": self.completion_mode},
        }

    @property
    def backups(self) -> list[tuple[int, Action]]:
        return [(i, a) for i, a in enumerate(self.actions) if a.is_backup]

    def with_mode(self, mode: str) -> Transaction:
        return replace(self, completion_mode=mode)

    def with_action(self, action: Action, index: int | None = None) -> Transaction:
        """Append, or replace the action at ``index``."""
        acts = list(self.actions)
        if index is None:
            acts.append(action)
        else:
            acts[index] = action
        return replace(self, actions=tuple(acts))

    def without(self, index: int) -> Transaction:
        acts = list(self.actions)
        del acts[index]
        return replace(self, actions=tuple(acts))

    def moved(self, index: int, delta: int) -> Transaction:
        """The action at ``index`` moved up (-1) or down (+1); unchanged at the ends."""
        new = index + delta
        if not (0 <= index < len(self.actions)) or not (0 <= new < len(self.actions)):
            return self
        acts = list(self.actions)
        acts[index], acts[new] = acts[new], acts[index]
        return replace(self, actions=tuple(acts))

