"""Whose bitmap is this, and which chain of ours does a change to it break?

For the console's bitmap dialogs (clear, remove, disable, merge into) and the chain view:
:func:`chain_of` names the policy chain that uses a bitmap, :func:`break_warning` is the line a
dialog shows, and :func:`record_console_break` writes the break to the ledger before the change
is sent (so the next run of that policy takes a full backup even if the app dies right after).
:func:`chains_touched` does the same for a composed transaction, and :func:`owner_of` adds what
the ledger knows to the name-based owners of :mod:`tui.core.model.owners`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.core.chains.chain import chain_state
from tui.core.ledger.repository import Ledger
from tui.core.model.owners import owner_label

# The console actions that make a bitmap miss writes (or hold writes it did not see).
BREAKING_ACTIONS = ("clear", "remove", "disable", "merge")


@dataclass(frozen=True, slots=True)
class ChainRef:
    """A current chain of ours that uses one bitmap."""

    connection: str
    policy: str
    drive: str
    node: str
    bitmap: str

    def warning(self) -> str:
        return f"policy {self.policy}'s chain for {self.drive} will need a new full backup"


def chain_of(ledger: Ledger, connection: str, node: str, bitmap: str) -> ChainRef | None:
    """The current chain of this ledger whose bitmap is ``bitmap`` on ``node``, or None.

    "Current": the chain the policy's next incremental would extend. A retired chain's bitmap
    (replaced by a newer full) is ours but breaks nothing.
    """
    for drive in ledger.drives(connection):
        cs = chain_state(ledger, connection, drive)
        base = cs.base
        if base is not None and base.node == node and base.bitmap == bitmap:
            return ChainRef(connection, base.policy or "?", drive, node, bitmap)
    return None


# Transaction action → the action word of BREAKING_ACTIONS it amounts to.
_ACTION_OF = {
    "block-dirty-bitmap-clear": "clear",
    "block-dirty-bitmap-remove": "remove",
    "block-dirty-bitmap-disable": "disable",
    "block-dirty-bitmap-merge": "merge",
}


def chains_touched(ledger: Ledger, connection: str,
                   actions: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, ChainRef]]:
    """For a composed transaction (``(type, data)`` per action): each (action word, chain) it
    breaks. A backup job of someone else's that reads our bitmap breaks it too: QEMU clears
    what that job copies, and our next incremental would miss it."""
    out: list[tuple[str, ChainRef]] = []
    for kind, data in actions:
        word = _ACTION_OF.get(kind)
        node, name = data.get("node"), data.get("name") or data.get("target")
        if kind in ("blockdev-backup", "drive-backup") and data.get("bitmap") and \
                data.get("bitmap-mode", "on-success") != "never":
            word, node, name = "backed up", data.get("device"), data.get("bitmap")
        if word is None or not isinstance(node, str) or not isinstance(name, str):
            continue
        ref = chain_of(ledger, connection, node, name)
        if ref is not None:
            out.append((word, ref))
    return out


def owner_of(ledger: Ledger | None, connection: str, node: str, bitmap: str) -> str:
    """The owner shown for a bitmap: ``policy P (drive D)`` for a current chain of ours,
    ``this ledger`` for another of ours, else :func:`tui.core.model.owners.owner_label`."""
    lid = ledger.ledger_id if ledger is not None else None
    if ledger is not None:
        ref = chain_of(ledger, connection, node, bitmap)
        if ref is not None:
            return f"policy {ref.policy} ({ref.drive})"
    return owner_label(bitmap, lid) or ""


# A ledger, or the path of one (opened for the call if the file exists: the console never
# creates a ledger just to look), or None (no ledger: nothing is ours).
LedgerRef = Ledger | Path | None


@contextmanager
def _using(ledger: LedgerRef) -> Iterator[Ledger | None]:
    if not isinstance(ledger, Path):
        yield ledger
        return
    if not ledger.exists():
        yield None
        return
    with Ledger(ledger) as opened:
        yield opened


def break_warning(connection: str, node: str, bitmap: str, action: str,
                  ledger: LedgerRef = None) -> str | None:
    """The dialog's warning for ``action`` on a bitmap of a current chain, else None."""
    if action not in BREAKING_ACTIONS:
        return None
    with _using(ledger) as led:
        ref = chain_of(led, connection, node, bitmap) if led is not None else None
    return ref.warning() if ref is not None else None


def record_console_break(connection: str, node: str, bitmap: str, action: str,
                         ledger: LedgerRef = None) -> bool:
    """Record that the console is about to ``action`` a current chain's bitmap (before sending).
    True when a break was recorded."""
    if action not in BREAKING_ACTIONS:
        return False
    with _using(ledger) as led:
        if led is None or chain_of(led, connection, node, bitmap) is None:
            return False
        verb = "merged into" if action == "merge" else f"{action}d" if action.endswith("e") else \
            f"{action}ed"
        led.record_break(connection, node, bitmap, f"bitmap '{bitmap}' was {verb} in the console")
        return True


# chains_touched's action words as a sentence's verb.
_VERB = {"clear": "clears", "remove": "removes", "disable": "disables", "merge": "merges into",
         "backed up": "backs up with"}


def transaction_breaks(connection: str, actions: list[tuple[str, dict[str, Any]]],
                       ledger: LedgerRef = None, *, record: bool = False) -> list[str]:
    """The warnings for a composed transaction that breaks current chains of ours (one line
    each); with ``record``, the breaks are also written to the ledger (before sending)."""
    with _using(ledger) as led:
        if led is None:
            return []
        touched = chains_touched(led, connection, actions)
        if record:
            for word, ref in touched:
                led.record_break(connection, ref.node, ref.bitmap,
                                 f"a composed transaction {_VERB.get(word, word)} bitmap "
                                 f"'{ref.bitmap}'")
        return [f"{ref.warning()} (this transaction {_VERB.get(word, word)} its bitmap "
                f"'{ref.bitmap}')" for word, ref in touched]
