"""The one way from the store to the screen: a :class:`StoreBridge` turns store changes into
:class:`StoreChanged` messages, coalesced to at most one per frame.

Store listeners run on connection tasks that may have been started outside Textual's context (the
fleet starts before the app); the bridge schedules its message back into the app's context. While
a message waits in the screen's queue, later changes replace it (``can_replace``), so a burst of
events costs one redraw.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.message import Message
from textual.message_pump import MessagePump

from tui.core.model.store import Store

FRAME = 1 / 30  # at most ~30 redraws a second


@dataclass
class StoreChanged(Message, bubble=False):
    """The store moved on to ``generation`` (the newest when the message is handled)."""

    generation: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StoreChanged)


class StoreBridge:
    """Posts :class:`StoreChanged` to ``target`` after store changes, at most once per ``delay``.

    Create it in the target's ``on_mount`` (the app's context is captured then) and ``close`` it
    in ``on_unmount``."""

    def __init__(self, store: Store, target: MessagePump, *, delay: float = FRAME) -> None:
        self.store = store
        self.target = target
        self.delay = delay
        self._context = contextvars.copy_context()
        self._scheduled = False
        self._last_post = 0.0
        self._unsubscribe: Callable[[], None] | None = store.subscribe(self._changed)

    def _changed(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        wait = max(0.0, self._last_post + self.delay - time.monotonic())
        asyncio.get_running_loop().call_later(wait, self._post, context=self._context)

    def _post(self) -> None:
        self._scheduled = False
        if self._unsubscribe is None:
            return
        self._last_post = time.monotonic()
        self.target.post_message(StoreChanged(self.store.generation))

    def close(self) -> None:
        """Stop listening (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
