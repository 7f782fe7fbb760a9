"""The dashboard: connections, nodes and bitmaps, jobs and the event log, live.

Redraws are coalesced: a store change only marks the screen dirty and schedules one render no
sooner than ``FRAME`` after the previous one, and every table is updated by diff inside
``app.batch_update()``. ``rendered_generation`` is the store generation last put on screen (the
benchmark compares it with ``store.generation``).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input

from tui.model.state import ConnectionModel, JobResult
from tui.model.store import Store
from tui.ui.palette import PaletteCommand
from tui.ui.screens.actions import DashboardActions
from tui.ui.screens.txn_actions import TransactionActions
from tui.ui.widgets.connections import ConnectionsTable
from tui.ui.widgets.events import EventLog
from tui.ui.widgets.jobs import JobsTable, job_key, split_key
from tui.ui.widgets.nodes import NodesTable, bitmap_key, node_key

FRAME = 1 / 30  # at most ~30 redraws a second
WIDE = 160  # columns from which jobs and events move to the right of the nodes


class DashboardScreen(DashboardActions, TransactionActions):
    """The screen an operator lives in."""

    BINDINGS = [
        Binding("slash", "filter", "Filter", id="dashboard.filter"),
        Binding("f", "follow", "Follow/pause", id="events.follow"),
        Binding("a", "toggle_all", "All conns", show=False, id="dashboard.all"),
        Binding("i", "toggle_anonymous", "Internal", show=False, id="nodes.anonymous"),
        Binding("t", "compose", "Transaction", show=False, id="txn.compose"),
        Binding("b", "backup_selected", "Backup…", show=False, id="txn.backup"),
        Binding("B", "backup_all", "Backup all…", show=False, id="txn.backup_all"),
    ]

    def __init__(self, store: Store, *, fleet: Any = None, read_only: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.store = store
        self.fleet = fleet
        self.read_only = read_only
        self.clock = clock
        self.selected_connection: str | None = None
        self.show_all = False
        # Public for the benchmark and tests: the store generation last drawn, and draw count.
        self.rendered_generation = -1
        self.render_count = 0
        self._scheduled = False
        self._last_render = 0.0
        self._unsubscribe: Callable[[], None] | None = None
        self._notified: set[str] = set()
        self._filter_target: Any = None
        self._app_context: contextvars.Context | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            with Vertical(id="left"):
                yield ConnectionsTable(id="connections")
                yield NodesTable(id="nodes")
            with Vertical(id="right"):
                yield JobsTable(id="jobs", clock=self.clock)
                yield EventLog(id="events")
        yield Input(id="filter", placeholder="filter (esc clears)", compact=True)
        yield Footer()

    @property
    def connections_table(self) -> ConnectionsTable:
        return self.query_one(ConnectionsTable)

    @property
    def event_log(self) -> EventLog:
        return self.query_one(EventLog)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        # Store changes arrive from connection tasks that may run outside Textual's context
        # (started before the app): renders are scheduled back into the app's context.
        self._app_context = contextvars.copy_context()
        self._unsubscribe = self.store.subscribe(self._store_changed)
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self.render_state()
        self.nodes_table.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#main").set_class(event.size.width >= WIDE, "-wide")

    def _theme_changed(self, _theme: object) -> None:
        # Cells carry styles resolved from the theme when they were written: redraw them all.
        for table in (self.connections_table, self.nodes_table, self.jobs_table):
            table.reset()
        log = self.event_log
        log.set_filter(log.filter_text, list(self.store.events), self.store.events_seen)
        self.render_state()

    # ------------------------------------------------------------------ live updates

    def _store_changed(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        delay = max(0.0, self._last_render + FRAME - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._flush, context=self._app_context)

    def _flush(self) -> None:
        self._scheduled = False
        if self.is_attached:
            self.render_state()

    def shown_connections(self) -> list[ConnectionModel]:
        """The selected connection (the first one by default), or all with ``show_all``."""
        conns = self.store.state.connections
        if self.show_all or not conns:
            return list(conns.values())
        if self.selected_connection not in conns:
            self.selected_connection = next(iter(conns))
        return [conns[self.selected_connection]]

    def render_state(self) -> None:
        """Put the store's current state on screen (diffs only)."""
        self._last_render = time.monotonic()
        state = self.store.state
        generation = self.store.generation
        shown = self.shown_connections()
        with self.app.batch_update():
            self.connections_table.show(state)
            self.nodes_table.show(shown, multi=len(shown) > 1)
            self.jobs_table.show(shown)
            log = self.event_log
            new = self.store.events_seen - log.seen
            if new > 0:
                recent = list(self.store.events)[-min(new, len(self.store.events)):] if self.store.events else []
                log.append(recent, self.store.events_seen)
        self._notify_failures(shown)
        self.rendered_generation = generation
        self.render_count += 1

    def _notify_failures(self, conns: list[ConnectionModel]) -> None:
        for conn in self.store.state.connections.values():
            for job in conn.jobs.values():
                key = job_key(conn.name, job.id)
                if job.result is JobResult.FAILED and key not in self._notified:
                    self._notified.add(key)
                    self.notify(f"job {job.id} on {conn.name} failed: {job.error or 'error'}",
                                title="Job failed", severity="error", timeout=15)

    # ------------------------------------------------------------------ selection

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is self.connections_table and event.row_key.value:
            if self.selected_connection != event.row_key.value:
                self.selected_connection = str(event.row_key.value)
                self.render_state()
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter on a job: its full details (the narrow jobs table shortens the error).
        if event.data_table is self.jobs_table and event.row_key.value:
            self.show_job_details(str(event.row_key.value))

    def show_job_details(self, key: str) -> None:
        """Notify the job's node, status and full error text."""
        conn, job_id = split_key(key)
        model = self.store.state.connections.get(conn)
        job = model.jobs.get(job_id) if model is not None else None
        if job is not None:
            self.notify(self.jobs_table.job_details(key, job), title=f"job {job_id}", timeout=15,
                        severity="error" if job.error else "information")

    def select_bitmap(self, connection: str, node: str, name: str | None = None) -> bool:
        """Put the nodes cursor on a bitmap (or on the node when ``name`` is None)."""
        self.selected_connection = connection
        self.render_state()
        key = node_key(connection, node) if name is None else bitmap_key(connection, node, name)
        return self.nodes_table.select_key(key)

    def select_job(self, connection: str, job_id: str) -> bool:
        self.selected_connection = connection
        self.render_state()
        return self.jobs_table.select_key(job_key(connection, job_id))

    # ------------------------------------------------------------------ view actions

    def context_commands(self) -> list[PaletteCommand]:
        """Palette: the selection's bitmap/job commands, then the view commands."""
        return super().context_commands() + [
            PaletteCommand("events: Follow / pause", "stop or resume scrolling the event log",
                           self.action_follow),
            PaletteCommand("view: Internal bitmaps", "show or hide anonymous bitmaps",
                           self.action_toggle_anonymous),
            PaletteCommand("view: All connections", "show nodes and jobs of every connection",
                           self.action_toggle_all),
            PaletteCommand("view: Filter", "filter the focused table", self.action_filter),
            PaletteCommand("help: Keys", "every key of the dashboard", self.app.action_help),  # type: ignore[attr-defined]
        ]

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.render_state()

    def action_toggle_anonymous(self) -> None:
        self.nodes_table.show_anonymous = not self.nodes_table.show_anonymous
        self.render_state()

    def action_follow(self) -> None:
        following = self.event_log.toggle_follow()
        self.notify("event log follows new events" if following else "event log paused",
                    timeout=2)

    def action_filter(self) -> None:
        focused = self.focused
        target = focused if isinstance(focused, (JobsTable, EventLog)) else self.nodes_table
        self._filter_target = target
        box = self.query_one("#filter", Input)
        box.value = self._current_filter(target)
        box.placeholder = {JobsTable: "filter jobs", EventLog: "events: conn:NAME type:ERROR words"}.get(
            type(target), "filter nodes and bitmaps by name")
        box.display = True
        box.focus()

    def _current_filter(self, target: Any) -> str:
        if isinstance(target, EventLog):
            return target.filter_text
        if isinstance(target, JobsTable):
            return target.text_filter
        return self.nodes_table.name_filter

    def apply_filter(self, target: Any, text: str) -> None:
        """Filter a table (or the event log) by ``text``."""
        if isinstance(target, EventLog):
            target.set_filter(text, list(self.store.events), self.store.events_seen)
            return
        if isinstance(target, JobsTable):
            target.text_filter = text.strip()
            target.border_title = "Jobs" + (f" [filter: {text.strip()}]" if text.strip() else "")
        else:
            self.nodes_table.name_filter = text.strip()
            self.nodes_table.border_title = "Nodes and bitmaps" + (
                f" [filter: {text.strip()}]" if text.strip() else "")
        self.render_state()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and self._filter_target is not None:
            self.apply_filter(self._filter_target, event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._close_filter()

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            if self._filter_target is not None:
                self.apply_filter(self._filter_target, "")
            box.value = ""
            self._close_filter()

    def _close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        target = self._filter_target or self.nodes_table
        self._filter_target = None
        target.focus()
