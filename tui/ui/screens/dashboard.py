"""The dashboard: connections, nodes and bitmaps, jobs and the event log, live.

Redraws are coalesced by the store bridge (at most one :class:`~tui.ui.bridge.StoreChanged` a
frame), and every table is updated by diff inside ``app.batch_update()``. After each render the
screen posts :class:`~tui.ui.messages.StateRendered` with the store generation it drew. Its keys
are the registry's (:mod:`tui.ui.actions`); what they do is :mod:`tui.ui.operations`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input
from textual.worker import Worker, WorkerState

from tui.core.model.state import ConnectionModel, JobResult, Node
from tui.core.ops.common import Outcome
from tui.session import ConsoleContext
from tui.ui.actions import DASHBOARD, bindings, palette_entries, refuses
from tui.ui.bridge import StoreBridge, StoreChanged
from tui.ui.messages import OperationFinished, StateRendered
from tui.ui.operations import DashboardOperations
from tui.ui.palette import PaletteCommand
from tui.ui.roles import FollowsJobs
from tui.ui.screens.dialogs import DialogParts, InfoDialog
from tui.ui.widgets.connections import ConnectionsTable
from tui.ui.widgets.events import EventLog
from tui.ui.widgets.footer import RankedFooter
from tui.ui.widgets.jobs import JobsTable, job_key, split_key
from tui.ui.widgets.nodes import NodesTable, bitmap_key, node_key

WIDE = 160  # columns from which jobs and events move to the right of the nodes


class DashboardScreen(Screen[None]):
    """The screen an operator lives in."""

    BINDINGS = bindings(DASHBOARD)
    # Registry groups of this screen: its help and palette, in this order.
    ACTION_GROUPS = ("nodes", "jobs", "dashboard")

    def __init__(self, context: ConsoleContext, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.context = context
        self.store = context.store
        self.fleet = context.fleet
        self.read_only = context.read_only
        self.clock = clock
        self.selected_connection: str | None = None
        self.show_all = False
        self.ops = DashboardOperations(self)
        self._bridge: StoreBridge | None = None
        self._notified: set[str] = set()
        self._filter_target: Any = None

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
        yield RankedFooter()
        yield DialogParts()

    @property
    def connections_table(self) -> ConnectionsTable:
        return self.query_one(ConnectionsTable)

    @property
    def nodes_table(self) -> NodesTable:
        return self.query_one(NodesTable)

    @property
    def jobs_table(self) -> JobsTable:
        return self.query_one(JobsTable)

    @property
    def event_log(self) -> EventLog:
        return self.query_one(EventLog)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._bridge = StoreBridge(self.store, self)
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self.render_state()
        self.nodes_table.focus()

    def on_screen_resume(self) -> None:
        """Back from another screen: the event log follows again (it could not scroll while
        the dashboard was covered)."""
        self.call_after_refresh(self.event_log.follow_again)

    def on_unmount(self) -> None:
        if self._bridge is not None:
            self._bridge.close()

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

    def on_store_changed(self, _message: StoreChanged) -> None:
        if self.is_attached:
            self.render_state()

    def _mark_on_screen(self, names: set[str]) -> None:
        """Tell each connection whether it is on screen (off screen ones are polled less)."""
        # A view over a bare store (no live connections, e.g. a fleet stand-in) polls nothing.
        for name, conn in (self.fleet.connections if self.fleet is not None else {}).items():
            conn.set_on_screen(name in names)

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
        shown = self.shown_connections()
        self._mark_on_screen({c.name for c in shown})
        state = self.store.state
        generation = self.store.generation
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
        self.post_message(StateRendered(generation))

    def _notify_failures(self, conns: list[ConnectionModel]) -> None:
        for conn in self.store.state.connections.values():
            for job in conn.jobs.values():
                key = job_key(conn.name, job.id)
                if job.result is JobResult.FAILED and key not in self._notified:
                    self._notified.add(key)
                    if self._shown_on_top(conn.name, job.id):
                        continue  # the screen on top reports it (a toast would cover it)
                    self.notify(f"job {job.id} on {conn.name} failed: {job.error or 'error'}",
                                title="Job failed", severity="error", timeout=15)

    def _shown_on_top(self, connection: str, job_id: str) -> bool:
        """Whether the screen on top follows this job itself (the composer's transaction)."""
        top = self.app.screen
        return isinstance(top, FollowsJobs) and top.follows_job(connection, job_id)

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
        """The job's node, status, progress and full error text, in a panel."""
        conn, job_id = split_key(key)
        model = self.store.state.connections.get(conn)
        job = model.jobs.get(job_id) if model is not None else None
        if job is not None:
            self.app.push_screen(InfoDialog(f"Job {job_id}",
                                            self.jobs_table.job_details(key, job)))

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

    # ------------------------------------------------------------------ outcomes

    def on_operation_finished(self, message: OperationFinished) -> None:
        """Show an outcome: success, a warning, a refusal or QEMU's error as it is."""
        outcome = message.outcome
        if outcome.warning:
            self.notify(outcome.warning, title="Warning", severity="warning", timeout=8)
        if outcome.ok:
            self.notify(outcome.message, timeout=4)
        else:
            title = (f"QEMU refused ({outcome.error_class})" if outcome.error_class
                     else "Not sent" if not outcome.sent else "Failed")
            self.notify(outcome.message, title=title, severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Anything an operation did not expect still becomes one visible line.
        if event.state is WorkerState.ERROR and event.worker.group == "ops":
            err = event.worker.error
            self.ops.report(Outcome(ok=False, message=f"{event.worker.name}: {err}", sent=False))

    # ------------------------------------------------------------------ keys (the registry's)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not refuses(action, self.read_only)

    def context_commands(self) -> list[PaletteCommand]:
        """Palette: what the registry offers for the current selection."""
        return [PaletteCommand(a.palette, a.help, partial(self.run_action, a.action))
                for a in palette_entries(self.ACTION_GROUPS, self, read_only=self.read_only)]

    def selected_node(self) -> Node | None:
        picked = self.ops.selected_node()
        return picked[1] if picked is not None else None

    def bitmap_allows(self, verb: str) -> bool:
        return self.ops.bitmap_allows(verb)

    def job_allows(self, verb: str) -> bool:
        return self.ops.job_allows(verb)

    def action_bitmap_add(self) -> None:
        self.ops.add_bitmap()

    def action_bitmap(self, verb: str) -> None:
        self.ops.bitmap_verb(verb)

    def action_bitmap_merge(self) -> None:
        self.ops.merge_into()

    def action_job(self, verb: str) -> None:
        self.ops.job_verb(verb)

    def action_job_speed(self) -> None:
        self.ops.job_speed()

    def action_compose(self) -> None:
        self.ops.compose()

    def action_backup(self, scope: str) -> None:
        self.ops.backup(scope)

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
