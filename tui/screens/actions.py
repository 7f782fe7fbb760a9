"""Bitmap and job actions of the dashboard, and its palette commands.

Each action validates with :mod:`tui.ops` first (the refusal is shown, nothing is sent), asks for
confirmation when destructive, then runs the operation in a worker and shows the outcome (QEMU's
own error text when QEMU refuses). In read-only mode the mutating actions are hidden from the
footer, the help and the palette, and refused if invoked anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.chains.owners import break_warning, record_console_break
from tui.model.state import ConnectionModel, Node
from tui.model.store import Store
from tui.ops import bitmaps as bitmap_ops
from tui.ops import jobs as job_ops
from tui.ops.bitmaps import BitmapRef
from tui.ops.common import Outcome, refused
from tui.palette import PaletteCommand
from tui.screens.bitmap_dialogs import AddBitmapDialog, AddRequest, MergeDialog
from tui.screens.dialogs import ConfirmDialog, SpeedDialog
from tui.widgets.jobs import JobsTable
from tui.widgets.nodes import NodesTable

BITMAP_ACTIONS = ("bitmap_add", "bitmap_clear", "bitmap_enable", "bitmap_disable", "bitmap_merge",
                  "bitmap_remove")
JOB_ACTIONS = ("job_pause", "job_resume", "job_cancel", "job_speed", "job_finalize", "job_dismiss")
MUTATING = frozenset(BITMAP_ACTIONS + JOB_ACTIONS)
CONFIRM = {"clear": "Clear", "remove": "Remove"}


class DashboardActions(Screen[None]):
    """Base of :class:`~tui.screens.dashboard.DashboardScreen`: its operations (kept apart to
    stay small). The dashboard sets these attributes."""

    store: Store
    fleet: Any
    read_only: bool

    @property
    def nodes_table(self) -> NodesTable:
        return self.query_one(NodesTable)

    @property
    def jobs_table(self) -> JobsTable:
        return self.query_one(JobsTable)

    # The outcome of the last operation (tests wait on it; the UI shows it as a notification).
    last_outcome: Outcome | None = None
    outcomes: int = 0

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.read_only:
            return False
        return True

    # ------------------------------------------------------------------ plumbing

    def report(self, outcome: Outcome) -> None:
        """Show an outcome: success, a warning, a refusal or QEMU's error as it is."""
        self.last_outcome = outcome
        self.outcomes += 1
        if outcome.warning:
            self.notify(outcome.warning, title="Warning", severity="warning", timeout=8)
        if outcome.ok:
            self.notify(outcome.message, timeout=4)
        else:
            title = (f"QEMU refused ({outcome.error_class})" if outcome.error_class
                     else "Not sent" if not outcome.sent else "Failed")
            self.notify(outcome.message, title=title, severity="error", timeout=10)

    def _target(self, connection: str) -> Any:
        if self.fleet is None or connection not in self.fleet.connections:
            return None
        return self.fleet.connections[connection]

    def run_op(self, connection: str,
               make: Callable[[Any], Awaitable[Outcome]], name: str) -> None:
        """Run an operation on a connection in a worker and report its outcome."""
        target = self._target(connection)
        if target is None:
            self.report(refused(f"{connection} is not connected"))
            return

        async def work() -> None:
            self.report(await make(target))

        self.run_worker(work(), name=name, group="ops", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Anything an operation did not expect still becomes one visible line.
        if event.state is WorkerState.ERROR and event.worker.group == "ops":
            err = event.worker.error
            self.report(Outcome(ok=False, message=f"{event.worker.name}: {err}", sent=False))

    def _bitmap_context(self, need_bitmap: bool = True
                        ) -> tuple[ConnectionModel, Node, str | None] | None:
        sel = self.nodes_table.selection
        if sel is None:
            self.report(refused("select a node or a bitmap first"))
            return None
        conn = self.store.state.connections.get(sel.connection)
        node = conn.node(sel.node) if conn else None
        if conn is None or node is None:
            self.report(refused("the selected node is gone"))
            return None
        if need_bitmap and sel.bitmap is None:
            what = "an internal (anonymous) bitmap cannot be changed" if sel.anonymous else \
                "select a bitmap (the rows under a node)"
            self.report(refused(what))
            return None
        return conn, node, sel.bitmap

    # ------------------------------------------------------------------ bitmap actions

    def action_bitmap_add(self) -> None:
        ctx = self._bitmap_context(need_bitmap=False)
        if ctx is None:
            return
        conn, node, _ = ctx

        def done(req: AddRequest | None) -> None:
            if req is not None:
                self.run_op(conn.name, lambda t: bitmap_ops.add(
                    t, node.node_name, req.name, granularity=req.granularity,
                    persistent=req.persistent, disabled=req.disabled), "bitmap-add")

        self.app.push_screen(AddBitmapDialog(node), done)

    def bitmap_action(self, action: str) -> None:
        """clear / enable / disable / remove the selected bitmap (clear and remove confirmed)."""
        ctx = self._bitmap_context()
        if ctx is None:
            return
        conn, node, name = ctx
        assert name is not None
        check = bitmap_ops.check_action(node, name, action)
        if not check.ok:
            self.report(refused(check.refusal or ""))
            return

        # A bitmap of a backup policy's chain: say which chain breaks, record it before sending.
        chain = break_warning(conn.name, node.node_name, name, action)

        def go(confirmed: bool | None = True) -> None:
            if confirmed:
                record_console_break(conn.name, node.node_name, name, action)
                self.run_op(conn.name, lambda t: bitmap_ops.act(t, node.node_name, name, action),
                            f"bitmap-{action}")

        if action in CONFIRM or chain:
            verb = CONFIRM.get(action, action.capitalize())
            bm = node.bitmap(name)
            extra = f" ({bm.count} dirty bytes will be forgotten)" if bm and action == "clear" else ""
            extra += f"\n{chain}." if chain else ""
            self.app.push_screen(ConfirmDialog(
                f"{verb} bitmap",
                f"{verb} bitmap '{name}' on node {node.node_name} ({conn.name})?{extra}",
                verb), go)
        else:
            go()

    def action_bitmap_clear(self) -> None:
        self.bitmap_action("clear")

    def action_bitmap_enable(self) -> None:
        self.bitmap_action("enable")

    def action_bitmap_disable(self) -> None:
        self.bitmap_action("disable")

    def action_bitmap_remove(self) -> None:
        self.bitmap_action("remove")

    def action_bitmap_merge(self) -> None:
        ctx = self._bitmap_context()
        if ctx is None:
            return
        conn, node, name = ctx
        assert name is not None
        check = bitmap_ops.check_action(node, name, "merge")
        if not check.ok:
            self.report(refused(check.refusal or ""))
            return
        into = BitmapRef(node.node_name, name)

        def picked(sources: list[BitmapRef] | None) -> None:
            if not sources:
                return
            names = ", ".join(str(s) for s in sources)

            chain = break_warning(conn.name, node.node_name, name, "merge")

            def go(confirmed: bool | None) -> None:
                if confirmed:
                    record_console_break(conn.name, node.node_name, name, "merge")
                    self.run_op(conn.name, lambda t: bitmap_ops.merge(t, into, sources),
                                "bitmap-merge")

            self.app.push_screen(ConfirmDialog(
                "Merge into bitmap",
                f"Merge {names} into bitmap '{name}' on node {node.node_name} ({conn.name})?"
                + (f"\n{chain}." if chain else ""),
                "Merge"), go)

        self.app.push_screen(MergeDialog(conn, into), picked)

    # ------------------------------------------------------------------ job actions

    def _job_context(self) -> tuple[str, str] | None:
        sel = self.jobs_table.selection
        if sel is None:
            self.report(refused("select a job first"))
            return None
        return sel

    def job_action(self, action: str) -> None:
        """pause / resume / cancel (confirmed) / finalize / dismiss the selected job."""
        sel = self._job_context()
        if sel is None:
            return
        conn_name, job_id = sel
        conn = self.store.state.connections.get(conn_name)
        check = job_ops.check_job(conn.jobs.get(job_id) if conn else None, action)
        if not check.ok:
            self.report(refused(check.refusal or ""))
            return

        def go(confirmed: bool | None = True) -> None:
            if confirmed:
                self.run_op(conn_name, lambda t: job_ops.act(t, job_id, action), f"job-{action}")

        if action == "cancel":
            self.app.push_screen(ConfirmDialog(
                "Cancel job", f"Cancel job '{job_id}' on {conn_name}? Its target image will be "
                "incomplete.", "Cancel job"), go)
        else:
            go()

    def action_job_pause(self) -> None:
        self.job_action("pause")

    def action_job_resume(self) -> None:
        self.job_action("resume")

    def action_job_cancel(self) -> None:
        self.job_action("cancel")

    def action_job_finalize(self) -> None:
        self.job_action("finalize")

    def action_job_dismiss(self) -> None:
        self.job_action("dismiss")

    def action_job_speed(self) -> None:
        sel = self._job_context()
        if sel is None:
            return
        conn_name, job_id = sel
        conn = self.store.state.connections.get(conn_name)
        job = conn.jobs.get(job_id) if conn else None
        check = job_ops.check_job(job, "set-speed")
        if not check.ok or job is None:
            self.report(refused(check.refusal or "no such job"))
            return

        def done(speed: int | None) -> None:
            if speed is not None:
                self.run_op(conn_name, lambda t: job_ops.set_speed(t, job_id, speed), "job-speed")

        self.app.push_screen(SpeedDialog(job_id, job.speed), done)

    # ------------------------------------------------------------------ palette

    def context_commands(self) -> list[PaletteCommand]:
        """Palette commands for the current selection (none that mutate in read-only mode)."""
        out: list[PaletteCommand] = []
        if not self.read_only:
            sel = self.nodes_table.selection
            conn = self.store.state.connections.get(sel.connection) if sel else None
            node = conn.node(sel.node) if conn and sel else None
            if sel and node is not None:
                out.append(PaletteCommand("bitmap: Add", f"new bitmap on {node.node_name}",
                                          self.action_bitmap_add))
                bm = node.bitmap(sel.bitmap) if sel.bitmap else None
                if bm is not None:
                    for action in bitmap_ops.allowed_actions(node, bm):
                        verb = "Merge into" if action == "merge" else action.capitalize()
                        cb = self.action_bitmap_merge if action == "merge" else partial(
                            self.bitmap_action, action)
                        out.append(PaletteCommand(f"bitmap: {verb}",
                                                  f"{action} '{bm.name}' on {node.node_name}", cb))
            jsel = self.jobs_table.selection
            jconn = self.store.state.connections.get(jsel[0]) if jsel else None
            job = jconn.jobs.get(jsel[1]) if jconn and jsel else None
            if job is not None:
                for action in job_ops.allowed_actions(job):
                    verb = "Set speed" if action == "set-speed" else action.capitalize()
                    cb = self.action_job_speed if action == "set-speed" else partial(
                        self.job_action, action)
                    out.append(PaletteCommand(f"job: {verb}", f"{action} job '{job.id}'", cb))
        return out
