"""The event log: timestamped QMP events, filterable by connection and event type, follow/pause.

Failures (BLOCK_JOB_ERROR, a completion with an error) and cancellations are highlighted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.core.base.text import LINE_LIMIT, shown
from tui.core.model.state import EventRecord

SEVERITY_CLASSES = set({"event--error", "event--warning", "event--info", "event--time"})
MAX_LINES = 5000  # lines the log holds (the store keeps its own, longer history)
STRIP_CACHE = 256  # formatted lines kept: a screenful or two, plus scrolling back a little


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


class EventLog(ScrollView, can_focus=True):
    """The event log as a line-API widget: it keeps the records that pass the filter (at most
    ``max_lines``) and formats a line only when it is drawn.

    Appending is list work (filter, one short summary per event for the line's width); only the
    lines on screen are ever turned into styled text, so a flood of events costs one redraw of
    the visible lines per frame instead of one render per event.
    """

    COMPONENT_CLASSES = SEVERITY_CLASSES

    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, *args: Any, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_lines = max_lines
        self.filter = EventFilter()
        self.filter_text = ""
        self.following = True
        self.auto_scroll = True  # mirrors ``following`` (the name RichLog/Log use)
        self.seen = 0  # store.events_seen at the last append
        self.shown = 0  # lines that passed the filter since it was set (including pruned ones)
        # (record, its summary): the summary is computed once, for the width and the line.
        self._records: deque[tuple[EventRecord, str]] = deque(maxlen=max_lines)
        self._width = 0
        # Formatted lines by their absolute number (``shown`` counts them), so a line keeps its
        # cache entry while older ones are pruned from the front. Only visible lines get here.
        self._strips: LRUCache[int, Strip] = LRUCache(STRIP_CACHE)

    def on_mount(self) -> None:
        self._retitle()

    def _retitle(self) -> None:
        title = "Events"
        if self.filter:
            title += f" [filter: {self.filter_text}]"
        title += "" if self.following else " (paused)"
        self.border_title = title

    def notify_style_update(self) -> None:
        """Styles changed (theme, focus tint): the cached lines carry the old ones."""
        super().notify_style_update()
        self._strips.clear()

    def line(self, ev: EventRecord, detail: str | None = None) -> Text:
        """One event as styled text (called only for lines being drawn)."""
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.time))
        out = Text(stamp + " ", style=self.get_component_rich_style("event--time", partial=True))
        style = self.get_component_rich_style(f"event--{ev.severity}", partial=True)
        out.append(shown(f"{ev.connection} {ev.name}"), style=style)
        if detail is None:
            detail = summary(ev.data)
        if detail:
            out.append(" " + shown(detail, LINE_LIMIT), style=style if ev.severity != "info" else "")
        return out

    def _strip(self, index: int) -> Strip:
        """The formatted line for ``self._records[index]``, uncropped."""
        key = self.shown - len(self._records) + index
        strip = self._strips.get(key)
        if strip is None:
            ev, detail = self._records[index]
            text = self.line(ev, detail)
            text.no_wrap = True
            text.stylize_before(self.rich_style)
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._strips[key] = strip
        return strip

    @property
    def lines(self) -> list[Strip]:
        """Every line the log holds, formatted (for inspection; drawing uses ``render_line``)."""
        return [self._strip(i) for i in range(len(self._records))]

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the visible region (the line API: only visible lines are asked for)."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        rich_style = self.rich_style
        if not self._records and y == 0:
            return self._placeholder().crop_extend(0, width, rich_style)
        if index >= len(self._records):
            return Strip.blank(width, rich_style)
        return self._strip(index).crop_extend(scroll_x, scroll_x + width, rich_style)

    def placeholder_text(self) -> str:
        """What an empty log says (a log that is empty because of its filter says so)."""
        if self.filter:
            return f"No event matches the filter '{self.filter_text}' (/ changes it)."
        return "No events yet: QEMU's events (jobs, errors, bitmaps) appear here as they come."

    def _placeholder(self) -> Strip:
        text = Text(self.placeholder_text(),
                    style=self.get_component_rich_style("event--time", partial=True))
        text.no_wrap = True
        text.stylize_before(self.rich_style)
        return Strip(text.render(self.app.console), text.cell_len)

    def follow_again(self) -> None:
        """Back at the newest line when following (a screen on top kept the log from
        scrolling while events came in)."""
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def append(self, events: Iterable[EventRecord], seen: int) -> None:
        """Add the events that pass the filter (``seen`` is the store's events_seen)."""
        matches = self.filter.matches
        added = 0
        width = self._width
        records = self._records
        for ev in events:
            if not matches(ev):
                continue
            detail = summary(ev.data)
            # "HH:MM:SS conn NAME detail": its width without formatting it.
            width = max(width, 10 + len(ev.connection) + len(ev.name) + (len(detail) + 1 if detail else 0))
            records.append((ev, detail))  # the deque drops the oldest beyond max_lines
            added += 1
        self.seen = seen
        if not added:
            return
        self.shown += added
        self._width = width
        self._resize_content(Size(width, len(records)))
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        # Lines moved up (pruned) or new ones came into view: redraw what is visible (cached
        # lines are reused; only lines new to the screen are formatted).
        self.refresh()

    def clear(self) -> None:
        """Forget every line."""
        self._records.clear()
        self._strips.clear()
        self._width = 0
        self.shown = 0
        self._resize_content(Size(0, 0))
        self.refresh()

    def _resize_content(self, size: Size) -> None:
        """Set the scrollable size without a re-layout of the whole screen when possible.

        ``virtual_size`` is a layout reactive: every change re-lays out every widget, which at
        one change per frame (a log filling up) costs more than drawing the frame. The log's box
        does not depend on its content when its width and height are set in CSS, so then only
        the scrollbars need to know.
        """
        if size == self.virtual_size:
            return
        width, height = self.styles.width, self.styles.height
        if width is None or height is None or width.is_auto or height.is_auto:
            self.virtual_size = size
            return
        self.set_reactive(EventLog.virtual_size, size)
        # ScrollView's private scrollbar update (what the virtual_size watcher does, minus the
        # re-layout); textual<9 is pinned in pyproject for this.
        self._scroll_update(size)

    def set_filter(self, text: str, history: Iterable[EventRecord], seen: int) -> None:
        """Apply a new filter to the store's log (``history``) from scratch."""
        self.filter_text = text.strip()
        self.filter = EventFilter.parse(self.filter_text)
        self.clear()
        self.append(history, seen)
        self._retitle()

    def toggle_follow(self) -> bool:
        """Pause or resume following new events; returns whether it now follows."""
        self.following = not self.following
        self.auto_scroll = self.following
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self._retitle()
        return self.following
