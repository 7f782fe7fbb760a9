"""The one mutable holder of the fleet's state; everything else reads snapshots.

Connections push events and poll results in; the reducer makes the new state; listeners (the UI,
which coalesces redraws) are told that something changed. No I/O, no Textual.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from tui.core.model.reducer import event_record, reduce_events
from tui.core.model.state import ConnectionModel, EventRecord, FleetState

Listener = Callable[[], None]


class Store:
    """Holds :class:`FleetState` and a bounded event log; notifies listeners on change."""

    def __init__(self, event_log_size: int = 5000) -> None:
        self.state = FleetState()
        self.events: deque[EventRecord] = deque(maxlen=event_log_size)
        # Counts every change; a UI compares it to the generation it last drew.
        self.generation = 0
        self.events_seen = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def subscribe_connection(self, name: str, listener: Listener) -> Callable[[], None]:
        """Like :meth:`subscribe`, for one connection: ``listener`` runs only when that
        connection's state was replaced (every change notifies every listener, so a fleet of
        200 would otherwise run each connection's listeners on every other one's events)."""
        last = [self.state.connections.get(name)]

        def changed() -> None:
            model = self.state.connections.get(name)
            if model is not last[0]:
                last[0] = model
                listener()

        return self.subscribe(changed)

    def _changed(self) -> None:
        self.generation += 1
        for listener in tuple(self._listeners):
            listener()

    def add_connection(self, name: str, address: str) -> None:
        conns = dict(self.state.connections)
        conns[name] = ConnectionModel(name=name, address=address)
        self.state = FleetState(conns)
        self._changed()

    def connection(self, name: str) -> ConnectionModel:
        return self.state.connections[name]

    def update(self, name: str, fn: Callable[[ConnectionModel], ConnectionModel]) -> None:
        """Replace one connection's state by ``fn(old)``; no notification if nothing changed."""
        old = self.state.connections.get(name)
        if old is None:
            return
        new = fn(old)
        if new is old:
            return
        conns = dict(self.state.connections)
        conns[name] = new
        self.state = replace(self.state, connections=conns)
        self._changed()

    def apply_event(self, name: str, event: Mapping[str, Any]) -> None:
        """Log one QMP event and reduce it into the connection's state (a single notification)."""
        self.apply_events(name, (event,))

    def apply_events(self, name: str, events: Iterable[Mapping[str, Any]]) -> None:
        """Log and reduce a batch of one connection's events in order: one new state, one
        notification (an event flood costs one snapshot per batch, not per event)."""
        batch = list(events)
        if not batch:
            return
        now = time.time()
        self.events.extend(event_record(name, event, now) for event in batch)
        self.events_seen += len(batch)
        old = self.state.connections.get(name)
        if old is None:
            return
        new = reduce_events(old, batch)
        if new is not old:
            conns = dict(self.state.connections)
            conns[name] = new
            self.state = replace(self.state, connections=conns)
        self._changed()
