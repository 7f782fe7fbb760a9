"""The event log: timestamped QMP events, filterable by connection and event type, follow/pause.

Failures (BLOCK_JOB_ERROR, a completion with an error) and cancellations are highlighted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from tui.model.state import EventRecord

SEVERITY_CLASSES = set({"event--error", "event--warning", "event--info", "event--time"})


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``conn:NAME`` / ``type:TEXT`` tokens (several of each allowed), other words match the line."""

    connections: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        conns: list[str] = []
        types: list[str] = []
        words: list[str] = []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key.lower() in ("conn", "c", "connection") and value:
                conns.append(value)
            elif sep and key.lower() in ("type", "t", "event") and value:
                types.append(value.upper())
            else:
                words.append(token.lower())
        return cls(tuple(conns), tuple(types), tuple(words))

    def matches(self, ev: EventRecord) -> bool:
        if self.connections and ev.connection not in self.connections:
            return False
        if self.types and not any(t in ev.name for t in self.types):
            return False
        if self.words:
            line = f"{ev.connection} {ev.name} {summary(ev.data)}".lower()
            return all(w in line for w in self.words)
        return True

    def __bool__(self) -> bool:
        return bool(self.connections or self.types or self.words)


def summary(data: dict[str, Any]) -> str:
    """The interesting fields of an event's data, in a stable order."""
    parts = []
    for key in ("id", "device", "type", "status", "operation", "action", "error"):
        if key in data:
            parts.append(f"{key}={data[key]}")
    if "offset" in data and "len" in data:
        parts.append(f"{data['offset']}/{data['len']}")
    if not parts and data:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(data.items()))[:120])
    return " ".join(parts)


class EventLog(RichLog):
    """Appends new events; re-renders from the store's log only when the filter changes."""

    COMPONENT_CLASSES = SEVERITY_CLASSES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_lines", 2000)
        kwargs.setdefault("wrap", False)
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)
        self.filter = EventFilter()
        self.filter_text = ""
        self.following = True
        self.seen = 0  # store.events_seen at the last append
        self.shown = 0  # lines currently shown (after the filter)

    def on_mount(self) -> None:
        self._retitle()

    def _retitle(self) -> None:
        title = "Events"
        if self.filter:
            title += f" [filter: {self.filter_text}]"
        title += "" if self.following else " (paused)"
        self.border_title = title

    def line(self, ev: EventRecord) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.time))
        out = Text(stamp + " ", style=self.get_component_rich_style("event--time", partial=True))
        style = self.get_component_rich_style(f"event--{ev.severity}", partial=True)
        out.append(f"{ev.connection} {ev.name}", style=style)
        detail = summary(ev.data)
        if detail:
            out.append(" " + detail, style=style if ev.severity != "info" else "")
        return out

    def append(self, events: Iterable[EventRecord], seen: int) -> None:
        """Write the events that pass the filter (``seen`` is the store's events_seen)."""
        matching = [ev for ev in events if self.filter.matches(ev)]
        if self.max_lines and len(matching) > self.max_lines:
            # A flood: only what the log can hold is worth rendering.
            self.shown += len(matching) - self.max_lines
            matching = matching[-self.max_lines:]
        for ev in matching:
            self.write(self.line(ev), scroll_end=self.following)
            self.shown += 1
        self.seen = seen

    def set_filter(self, text: str, history: Iterable[EventRecord], seen: int) -> None:
        self.filter_text = text.strip()
        self.filter = EventFilter.parse(self.filter_text)
        self.clear()
        self.shown = 0
        self.append(history, seen)
        self._retitle()

    def toggle_follow(self) -> bool:
        self.following = not self.following
        self.auto_scroll = self.following
        if self.following:
            self.scroll_end(animate=False)
        self._retitle()
        return self.following
