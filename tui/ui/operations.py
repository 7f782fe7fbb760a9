"""What the dashboard's bitmap, job and transaction keys do: resolve the selection, validate with
:mod:`tui.core.ops` (the refusal is shown, nothing is sent), ask for confirmation when destructive, run
the operation in a worker, and post :class:`~tui.ui.messages.OperationFinished` with the outcome
(QEMU's own error text when QEMU refuses).

:class:`DashboardOperations` is a plain helper the dashboard owns (not a screen, not a mixin); the
keys themselves and their read-only marks are in :mod:`tui.ui.actions`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from tui.core.base.format import human_bytes
from tui.core.chains.owners import break_warning, record_console_break
from tui.core.model.state import Bitmap, ConnectionModel, Job, Node
from tui.core.model.store import Store
from tui.core.ops import bitmaps as bitmap_ops
from tui.core.ops import jobs as job_ops
from tui.core.ops.bitmaps import BitmapRef
from tui.core.ops.common import Outcome, refused
from tui.core.qmp.fleet import Fleet
from tui.core.txn.incremental import plan_incremental
from tui.session import ConsoleContext
from tui.ui.messages import OperationFinished
from tui.ui.screens.bitmap_dialogs import AddBitmapDialog, AddRequest, MergeDialog
from tui.ui.screens.composer import ComposerScreen, Draft
from tui.ui.screens.dialogs import ConfirmDialog, SpeedDialog
from tui.ui.screens.txn_dialogs import PatternDialog

# Bitmap verbs that ask first, with the dialog's verb.
CONFIRM = {"clear": "Clear", "remove": "Remove"}


class Host(Protocol):
    """What the operations need from their screen (the dashboard)."""

    context: ConsoleContext
    store: Store
    fleet: Fleet | None
    selected_connection: str | None
    app: Any

    @property
    def nodes_table(self) -> Any: ...

    @property
    def jobs_table(self) -> Any: ...

    def post_message(self, message: Any) -> bool: ...

    def run_worker(self, work: Any, *, name: str, group: str, exit_on_error: bool) -> Any: ...


class DashboardOperations:
    """The dashboard's operations on its current selection."""

    def __init__(self, screen: Host) -> None:
        self.screen = screen
        #: connection → its unsent transaction (kept while the operator is elsewhere)
        self.drafts: dict[str, Draft] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def app(self) -> Any:
        return self.screen.app

    @property
    def ledger(self) -> Path | None:
        """The ledger whose chains a bitmap change may break (the session's)."""
        return self.screen.context.ledger_path

    def report(self, outcome: Outcome) -> None:
        self.screen.post_message(OperationFinished(outcome))

    def _target(self, connection: str) -> Any:
        fleet = self.screen.fleet
        if fleet is None or connection not in fleet.connections:
            return None
        return fleet.connections[connection]

    def run(self, connection: str, make: Callable[[Any], Awaitable[Outcome]], name: str) -> None:
        """Run an operation on a connection in a worker and report its outcome."""
        target = self._target(connection)
        if target is None:
            self.report(refused(f"{connection} is not connected"))
            return

        async def work() -> None:
            self.report(await make(target))

        self.screen.run_worker(work(), name=name, group="ops", exit_on_error=False)

    # ------------------------------------------------------------------ selection

    def selected_node(self) -> tuple[ConnectionModel, Node] | None:
        """The connection and node under the nodes cursor (a node row or one of its bitmaps)."""
        sel = self.screen.nodes_table.selection
        conn = self.screen.store.state.connections.get(sel.connection) if sel else None
        node = conn.node(sel.node) if conn is not None and sel is not None else None
        return (conn, node) if conn is not None and node is not None else None

    def selected_bitmap(self) -> Bitmap | None:
        sel = self.screen.nodes_table.selection
        picked = self.selected_node()
        if picked is None or sel is None or sel.bitmap is None:
            return None
        return picked[1].bitmap(sel.bitmap)

    def selected_job(self) -> tuple[str, Job | None] | None:
        sel = self.screen.jobs_table.selection
        if sel is None:
            return None
        conn = self.screen.store.state.connections.get(sel[0])
        return sel[0], conn.jobs.get(sel[1]) if conn is not None else None

    def bitmap_allows(self, verb: str) -> bool:
        picked, bm = self.selected_node(), self.selected_bitmap()
        return picked is not None and bm is not None and verb in bitmap_ops.allowed_actions(
            picked[1], bm)

    def job_allows(self, verb: str) -> bool:
        sel = self.selected_job()
        return sel is not None and sel[1] is not None and verb in job_ops.allowed_actions(sel[1])

    def _bitmap_context(self) -> tuple[ConnectionModel, Node, str] | None:
        sel = self.screen.nodes_table.selection
        picked = self.selected_node()
        if sel is None or picked is None:
            self.report(refused("select a node or a bitmap first" if sel is None
                                else "the selected node is gone"))
            return None
        if sel.bitmap is None:
            self.report(refused("an internal (anonymous) bitmap cannot be changed" if sel.anonymous
                                else "select a bitmap (the rows under a node)"))
            return None
        return picked[0], picked[1], sel.bitmap

    # ------------------------------------------------------------------ bitmaps

    def add_bitmap(self) -> None:
        picked = self.selected_node()
        if picked is None:
            self.report(refused("select a node or a bitmap first"))
            return
        conn, node = picked

        def done(req: AddRequest | None) -> None:
            if req is not None:
                self.run(conn.name, lambda t: bitmap_ops.add(
                    t, node.node_name, req.name, granularity=req.granularity,
                    persistent=req.persistent, disabled=req.disabled), "bitmap-add")

        self.app.push_screen(self._add_dialog(node), done)

    def _add_dialog(self, node: Node) -> AddBitmapDialog:
        """The app's one add-bitmap dialog (installed, so closing it keeps it composed)."""
        name = "add-bitmap"
        if not self.app.is_screen_installed(name):
            self.app.install_screen(AddBitmapDialog(node), name)
        dialog = self.app.get_screen(name)
        assert isinstance(dialog, AddBitmapDialog)
        return dialog.for_node(node)

    def bitmap_verb(self, verb: str) -> None:
        """clear / enable / disable / remove the selected bitmap (clear and remove confirmed)."""
        ctx = self._bitmap_context()
        if ctx is None:
            return
        conn, node, name = ctx
        check = bitmap_ops.check_action(node, name, verb, conn.jobs.values())
        if not check.ok:
            self.report(refused(check.refusal or ""))
            return

        # A bitmap of a backup policy's chain: say which chain breaks, record it before sending.
        chain = break_warning(conn.name, node.node_name, name, verb, self.ledger)

        def go(confirmed: bool | None = True) -> None:
            if confirmed:
                record_console_break(conn.name, node.node_name, name, verb, self.ledger)
                self.run(conn.name, lambda t: bitmap_ops.act(t, node.node_name, name, verb),
                         f"bitmap-{verb}")

        if verb not in CONFIRM and not chain:
            go()
            return
        title = CONFIRM.get(verb, verb.capitalize())
        bm = node.bitmap(name)
        extra = (f" ({human_bytes(bm.count)} of recorded changes will be forgotten)"
                 if bm is not None and verb == "clear" else "")
        extra += f"\n{chain}." if chain else ""
        self.app.push_screen(ConfirmDialog(
            f"{title} bitmap",
            f"{title} bitmap '{name}' on node {node.node_name} ({conn.name})?{extra}",
            title), go)

    def merge_into(self) -> None:
        ctx = self._bitmap_context()
        if ctx is None:
            return
        conn, node, name = ctx
        check = bitmap_ops.check_action(node, name, "merge")
        if not check.ok:
            self.report(refused(check.refusal or ""))
            return
        into = BitmapRef(node.node_name, name)

        def picked(sources: list[BitmapRef] | None) -> None:
            if not sources:
                return
            names = ", ".join(str(s) for s in sources)
            chain = break_warning(conn.name, node.node_name, name, "merge", self.ledger)

            def go(confirmed: bool | None) -> None:
                if confirmed:
                    record_console_break(conn.name, node.node_name, name, "merge", self.ledger)
                    self.run(conn.name, lambda t: bitmap_ops.merge(t, into, sources),
                             "bitmap-merge")

            self.app.push_screen(ConfirmDialog(
                "Merge into bitmap",
                f"Merge {names} into bitmap '{name}' on node {node.node_name} ({conn.name})?"
                + (f"\n{chain}." if chain else ""),
                "Merge"), go)

        self.app.push_screen(MergeDialog(conn, into), picked)

    # ------------------------------------------------------------------ jobs

    def _job_context(self, verb: str) -> tuple[str, Job] | None:
        sel = self.selected_job()
        if sel is None:
            self.report(refused("select a job first"))
            return None
        check = job_ops.check_job(sel[1], verb)
        if not check.ok or sel[1] is None:
            self.report(refused(check.refusal or "no such job"))
            return None
        return sel[0], sel[1]

    def job_verb(self, verb: str) -> None:
        """pause / resume / cancel (confirmed) / finalize / dismiss the selected job."""
        ctx = self._job_context(verb)
        if ctx is None:
            return
        conn_name, job = ctx

        def go(confirmed: bool | None = True) -> None:
            if confirmed:
                self.run(conn_name, lambda t: job_ops.act(t, job.id, verb), f"job-{verb}")

        if verb != "cancel":
            go()
            return
        self.app.push_screen(ConfirmDialog(
            "Cancel job", f"Cancel job '{job.id}' on {conn_name}? Its target image will be "
            "incomplete.", "Stop the job", back_label="Let it run"), go)

    def job_speed(self) -> None:
        ctx = self._job_context("set-speed")
        if ctx is None:
            return
        conn_name, job = ctx

        def done(speed: int | None) -> None:
            if speed is not None:
                self.run(conn_name, lambda t: job_ops.set_speed(t, job.id, speed), "job-speed")

        self.app.push_screen(SpeedDialog(job.id, job.speed), done)

    # ------------------------------------------------------------------ transactions

    def _txn_connection(self) -> str | None:
        sel = self.screen.nodes_table.selection
        name = sel.connection if sel else self.screen.selected_connection
        fleet = self.screen.fleet
        if fleet is None or name is None or name not in fleet.connections:
            self.report(refused("no connection to compose a transaction for"))
            return None
        return name

    def compose(self) -> None:
        """Open the composer on the selected connection: its unsent draft if there is one, else
        empty (composing is allowed read-only: to prepare, check and save; the composer refuses
        to send)."""
        name = self._txn_connection()
        if name is None:
            return
        draft = self.drafts.get(name)
        context = self.screen.context
        screen = (ComposerScreen.from_draft(context, name, draft) if draft
                  else ComposerScreen(context, name))
        self.open_composer(name, screen)

    def open_composer(self, name: str, screen: ComposerScreen) -> None:
        """Push a composer; what it leaves unsent is kept as ``name``'s draft (``t`` reopens
        it)."""
        def left(draft: Draft | None) -> None:
            if draft is None:
                self.drafts.pop(name, None)
            else:
                self.drafts[name] = draft

        self.app.push_screen(screen, left)

    def preferred_bitmaps(self, model: ConnectionModel) -> dict[str, list[str]]:
        """Device → the bitmaps the config's policies use on it (tried first by ``b``/``B``)."""
        out: dict[str, list[str]] = {}
        for policy in self.screen.context.policies.values():
            if policy.connection != model.name:
                continue
            for drive in policy.drives:
                node = model.find_node(drive)
                if node is not None:
                    out.setdefault(node.device or node.node_name, []).append(policy.bitmap)
        return out

    def backup(self, scope: str) -> None:
        """An incremental backup of the selected drive (``selected``) or of every drive
        (``all``: a VM-wide point in time), in the composer. Each drive uses the bitmap under
        the cursor, else a policy's, else its one active bitmap; drives with none are named in
        the dialog with the reason and left out."""
        name = self._txn_connection()
        if name is None:
            return
        model = self.screen.store.connection(name)
        selected: dict[str, str] = {}
        if scope == "all":
            drives = sorted(n.device for n in model.nodes.values() if n.device)
        else:
            picked = self.selected_node()
            if picked is None:
                self.report(refused("select a drive (a node row) first"))
                return
            drive = picked[1].device or picked[1].node_name
            drives = [drive]
            bm = self.selected_bitmap()
            if bm is not None and bm.name is not None:
                selected[drive] = bm.name
        preferred = self.preferred_bitmaps(model)
        plan = plan_incremental(model, drives, selected=selected, preferred=preferred)
        if not plan.transaction.actions:
            why = "; ".join(str(s) for s in plan.skipped) or f"{name} has no drive"
            self.report(refused(f"nothing to back up: {why}"))
            return
        usable = [t.device for t in plan.targets]

        def chosen(pattern: str | None) -> None:
            if pattern:
                self.open_composer(name, ComposerScreen.for_incremental(
                    self.screen.context, name, drives, pattern, selected=selected,
                    preferred=preferred))

        def ask_pattern(replace: bool | None = True) -> None:
            if replace:
                self.app.push_screen(PatternDialog(usable, skipped=[str(s) for s in plan.skipped]),
                                     chosen)

        if name in self.drafts:
            self.app.push_screen(ConfirmDialog(
                "Replace the unsent transaction?", f"{name} has an unsent transaction (t "
                "reopens it). Start a new one instead?", "Replace", back_label="Keep it"),
                ask_pattern)
            return
        ask_pattern()
