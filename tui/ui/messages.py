"""Messages the screens post about what they did: tests and embedding code observe these (e.g.
with ``App.run_test(message_hook=...)``) instead of counters kept for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from tui.core.ops.common import Outcome


@dataclass
class OperationFinished(Message, bubble=False):
    """A bitmap or job operation ended: sent, refused before sending, or refused by QEMU."""

    outcome: Outcome


@dataclass
class StateRendered(Message, bubble=False):
    """A screen put the store's state of ``generation`` on screen."""

    generation: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StateRendered)


@dataclass
class PolicyRunFinished(Message, bubble=False):
    """A backup policy run from the chains screen ended (its result, or the error line)."""

    result: Any
    error: str | None = None


@dataclass
class ChainsVerified(Message, bubble=False):
    """The chains screen's verification ended: one line per check."""

    lines: list[str]


@dataclass
class RestoreFinished(Message, bubble=False):
    """A restore started from the chains screen ended: its one-line result."""

    line: str
