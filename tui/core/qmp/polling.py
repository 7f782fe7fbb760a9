"""Keeping one connection's Store current: the event pump, the node and job polls, and how
often a connection off screen is polled."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from tui.core.base.errors import ConnectionLostError, NotConnectedError
from tui.core.model import reducer
from tui.core.model.parse import parse_jobs, parse_nodes
from tui.core.model.state import ConnectionModel
from tui.core.model.store import Store
from tui.core.qmp.client import QuietQMPClient
from tui.core.qmp.settings import ConnectionSettings

# Pause after a job event before re-reading bitmaps, so a burst of events costs one query.
EVENT_DEBOUNCE = 0.05
# A connection not on screen is polled this many times less often; after UNCHANGED_ROUNDS
# refreshes that changed nothing, twice less again, never slower than SLOWEST_POLL seconds.
# Events (and coming into view) still refresh it at once.
OFF_SCREEN_FACTOR = 4
UNCHANGED_ROUNDS = 3
SLOWEST_POLL = 30.0


class Polling:
    """The Store side of a connection (the base of :class:`~tui.core.qmp.connection.Connection`):
    events are reduced as they come, nodes are re-read every :meth:`node_interval` and after job
    events, jobs every ``job_poll_interval`` while one runs."""

    name: str
    store: Store
    settings: ConnectionSettings

    def _init_polling(self) -> None:
        # Whether a screen shows this connection (headless users leave it on: full rate).
        self.on_screen = True
        self._unchanged_rounds = 0
        self._wake = asyncio.Event()
        self._want_nodes = False
        # > 0 while node queries must not be sent (see quiet_nodes).
        self._quiet_nodes = 0
        self._stopping = False
        # Job events counted, and the count at each job's last event (see refresh_jobs).
        self._event_serial = 0
        self._job_event_at: dict[str, int] = {}
        # The last node replies and the nodes the model got from them (see refresh_nodes).
        self._last_node_replies: tuple[Any, Any, dict[str, Any]] | None = None

    @property
    def model(self) -> ConnectionModel:
        return self.store.connection(self.name)

    async def _query(self, command: str) -> Any:
        """Run one read-only query (the Connection sends it)."""
        raise NotImplementedError

    async def _pump(self, client: QuietQMPClient) -> None:
        """The only consumer of the client's events: whatever is queued when one arrives is taken
        with it and reduced as one batch."""
        store = self.store
        name = self.name
        inbox = client.inbox
        while True:
            batch = await inbox.take()
            store.apply_events(name, batch)
            self._note_job_events(batch)

    def _note_job_events(self, events: list[dict[str, Any]]) -> None:
        """Job events mark their jobs (a poll answered before them must not undo them) and ask
        for a node refresh (their bitmaps changed)."""
        job_events = reducer.JOB_EVENTS
        seen = False
        for event in events:
            if event.get("event") not in job_events:
                continue
            seen = True
            self._event_serial += 1
            data = event.get("data")
            if isinstance(data, dict):
                for key in ("id", "device"):
                    if isinstance(data.get(key), str):
                        self._job_event_at[data[key]] = self._event_serial
        if seen:
            self._want_nodes = True
            self._wake.set()

    def request_refresh(self) -> None:
        """Ask for a node and job refresh soon (coalesced)."""
        self._want_nodes = True
        self._wake.set()

    def set_on_screen(self, shown: bool) -> None:
        """A screen started or stopped showing this connection: off screen it is polled less
        often; coming into view it is refreshed at once."""
        if shown == self.on_screen:
            return
        self.on_screen = shown
        self._unchanged_rounds = 0
        if shown:
            self.request_refresh()
        self._note_poll_interval()

    def node_interval(self) -> float:
        """Seconds between node refreshes now (see OFF_SCREEN_FACTOR)."""
        if self.on_screen:
            return self.settings.refresh_interval
        slow = self.settings.refresh_interval * OFF_SCREEN_FACTOR
        if self._unchanged_rounds >= UNCHANGED_ROUNDS:
            slow *= 2
        return max(self.settings.refresh_interval, min(slow, SLOWEST_POLL))

    def _note_poll_interval(self) -> None:
        every = self.node_interval()
        slow = None if every <= self.settings.refresh_interval else every
        if self.model.slow_poll != slow:
            self.store.update(self.name, lambda c: replace(c, slow_poll=slow))

    async def _poll_loop(self) -> None:
        # A fleet connects all at once: polled in step, its replies would arrive in one burst
        # (200 node lists parsed back to back stall the console). The first wait is a random
        # part of the interval (the connect has just refreshed), so the polls spread out.
        last_nodes = time.monotonic() - random.uniform(0, self.node_interval())
        while True:
            busy = bool(self.model.active_jobs)
            wait = self.settings.job_poll_interval if busy else max(
                0.0, self.node_interval() - (time.monotonic() - last_nodes)
            )
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
                await asyncio.sleep(EVENT_DEBOUNCE)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self._want_nodes or time.monotonic() - last_nodes >= self.node_interval():
                    self._want_nodes = False
                    await self.refresh_nodes()
                    last_nodes = time.monotonic()
                if busy or self.model.active_jobs:
                    await self.refresh_jobs()
            except (NotConnectedError, ConnectionLostError):
                if self._stopping:  # the link is being closed under the query: not a failure
                    return
                raise

    @contextlib.contextmanager
    def quiet_nodes(self) -> Iterator[None]:
        """Hold node queries back (they run once afterwards).

        QEMU 7.2 aborts (``qcow2_get_specific_info: Assertion `false' failed``) when
        query-named-block-nodes or query-block runs while ``blockdev-create`` formats a qcow2 image.
        """
        self._quiet_nodes += 1
        try:
            yield
        finally:
            self._quiet_nodes -= 1
            if not self._quiet_nodes:
                self.request_refresh()

    async def refresh_nodes(self) -> None:
        if self._quiet_nodes:
            self._want_nodes = True
            return
        cmds = self.model.commands
        # query-named-block-nodes is 2.0+; before that query-block is all there is.
        named = await self._query("query-named-block-nodes") if (
            not cmds or "query-named-block-nodes" in cmds
        ) else None
        blocks = await self._query("query-block")
        before = self.model
        if not self._same_node_replies(named, blocks, before):
            nodes = parse_nodes(named, blocks)
            self.store.update(self.name, lambda c: reducer.apply_nodes(c, nodes))
            self._last_node_replies = (named, blocks, self.model.nodes)
        self._unchanged_rounds = self._unchanged_rounds + 1 if self.model is before else 0
        self._note_poll_interval()

    def _same_node_replies(self, named: Any, blocks: Any, model: ConnectionModel) -> bool:
        """QEMU answered exactly what the model's nodes were made from: nothing to parse (most
        polls of an idle fleet; comparing the replies costs a fraction of parsing them)."""
        last = self._last_node_replies
        return (last is not None and model.synced and model.nodes is last[2]
                and last[0] == named and last[1] == blocks)

    async def refresh_jobs(self) -> None:
        cmds = self.model.commands
        started = self._event_serial
        qjobs = await self._query("query-jobs") if "query-jobs" in cmds else None
        qblock = await self._query("query-block-jobs")
        jobs = parse_jobs(qjobs, qblock)
        # A job event that arrived between the queries and now is newer than their replies.
        keep = frozenset(j for j, at in self._job_event_at.items() if at > started)
        self.store.update(self.name, lambda c: reducer.apply_jobs(c, jobs, keep))

    async def refresh(self) -> None:
        await self.refresh_nodes()
        await self.refresh_jobs()
