"""The transaction composer: build, check, preview, send, then follow the group to its verdict.

Needs only a Fleet (for its Store and connections) and a connection name, so any App can push it:
``app.push_screen(ComposerScreen(context, "vm0"))``. All transaction logic lives in :mod:`tui.core.txn`;
this screen only shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Label,
    ListItem,
    ListView,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, WorkerState

from tui.core.base.errors import BitmapTuiError
from tui.core.chains.owners import transaction_breaks
from tui.core.model.state import ConnectionModel
from tui.core.txn import (
    GROUPED,
    INDIVIDUAL,
    Action,
    Finding,
    Prepared,
    Transaction,
    TransactionRun,
    Verdict,
    prepare,
    save,
)
from tui.core.txn.incremental import (
    DEFAULT_PATTERN,
    PlannedTarget,
    Skipped,
    pending,
    plan_incremental,
    planned_nodes,
)
from tui.session import ConsoleContext
from tui.ui.actions import COMPOSER, bindings, refuses
from tui.ui.bridge import StoreBridge, StoreChanged
from tui.ui.screens.composer_palette import ComposerCommands
from tui.ui.screens.composer_panels import (
    JOB_COLUMNS,
    NOT_SENT,
    checks_text,
    job_cells,
    mode_text,
    preview_text,
    title_text,
    verdict_text,
    whatif_text,
)
from tui.ui.screens.composer_send import Sending
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.txn_dialogs import AskDialog
from tui.ui.widgets.action_form import ActionForm
from tui.ui.widgets.footer import RankedFooter

# At most this many redraws a second from store changes (a frame budget for the live view).
REDRAW_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class Draft:
    """An unsent transaction kept while the operator is on another screen (``t`` reopens it)."""

    transaction: Transaction
    targets: tuple[PlannedTarget, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    path: Path | None = None


class ComposerScreen(Screen[Draft | None]):
    """Compose a transaction for one connection, check it, send it and read the verdict.

    Leaving with unsent changes asks first and hands the unsent transaction back to the caller
    as a :class:`Draft` (the dismiss result; None when there is nothing unsent)."""

    COMMANDS = {ComposerCommands}

    DEFAULT_CSS = """
    ComposerScreen #composer-title { height: 1; background: $primary; color: $text; padding: 0 1; }
    ComposerScreen #left { width: 1fr; min-width: 30; border-right: solid $primary; }
    ComposerScreen #right { width: 2fr; }
    ComposerScreen #actions { height: 1fr; }
    ComposerScreen #mode { height: 1; padding: 0 1; }
    ComposerScreen .panel { padding: 0 1; }
    ComposerScreen #jobs { height: auto; max-height: 8; }
    ComposerScreen #run-panel:focus { border-left: thick $accent; }
    """
    BINDINGS = bindings(COMPOSER)
    ACTION_GROUPS = ("composer",)
    VIEWS = ("tab-form", "tab-json", "tab-checks", "tab-whatif", "tab-run")

    def __init__(self, context: ConsoleContext, connection: str,
                 transaction: Transaction | None = None, *, path: str | Path | None = None,
                 targets: tuple[PlannedTarget, ...] = (),
                 skipped: tuple[Skipped, ...] = ()) -> None:
        super().__init__()
        self.context = context
        self.store = context.store
        self.connection = connection
        self.txn = transaction or Transaction()
        self.path = Path(path) if path else None
        #: target images created through QEMU right before sending
        self.targets = targets
        #: drives left out of a "backup of these drives", with the reason
        self.skipped = skipped
        self.prepared: Prepared | None = None
        self.run: TransactionRun | None = None
        self.verdict: Verdict | None = None
        self._bridge: StoreBridge | None = None
        self._sending = Sending(context.fleet, connection)
        # what was last sent, saved or loaded: leaving with anything else asks first
        self._clean = self.txn if path else Transaction()

    @classmethod
    def from_draft(cls, context: ConsoleContext, connection: str, draft: Draft) -> ComposerScreen:
        """Reopen an unsent transaction."""
        return cls(context, connection, draft.transaction, path=draft.path, targets=draft.targets,
                   skipped=draft.skipped)

    @classmethod
    def for_incremental(cls, context: ConsoleContext, connection: str, devices: list[str],
                        pattern: str = DEFAULT_PATTERN, *,
                        selected: dict[str, str] | None = None,
                        preferred: dict[str, list[str]] | None = None) -> ComposerScreen:
        """Start from a selection of drives: one incremental blockdev-backup each, grouped, to
        a new image next to the drive's (created through QEMU when sent); see
        :func:`tui.core.txn.incremental.plan_incremental` for the bitmap each drive uses."""
        model: ConnectionModel = context.store.connection(connection)
        plan = plan_incremental(model, devices, selected=selected, preferred=preferred,
                                pattern=pattern)
        return cls(context, connection, plan.transaction, targets=plan.targets,
                   skipped=plan.skipped)

    @property
    def unsent(self) -> bool:
        """Whether leaving now would leave changes that were neither sent nor saved."""
        return bool(self.txn.actions) and self.txn != self._clean

    def follows_job(self, connection: str, job_id: str) -> bool:
        """Whether this screen shows the job's outcome (a job of its transaction)."""
        return (connection == self.connection and self.run is not None
                and job_id in self.run.job_ids)

    def draft(self) -> Draft | None:
        """The unsent transaction, if any (what the dashboard keeps for ``t``)."""
        if not self.unsent:
            return None
        return Draft(self.txn, self.targets, self.skipped, self.path)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="composer-title")
        with Horizontal():
            with Vertical(id="left"):
                yield ListView(id="actions")
                yield Static(id="mode")
            with TabbedContent(id="right", initial="tab-form"):
                with TabPane("Form", id="tab-form"):
                    yield ActionForm(id="form")
                with TabPane("JSON", id="tab-json"), VerticalScroll(classes="panel"):
                    yield Static(id="preview", markup=False)
                with TabPane("Checks", id="tab-checks"), VerticalScroll(classes="panel"):
                    yield Static(id="checks")
                with TabPane("What-if", id="tab-whatif"), VerticalScroll(classes="panel"):
                    yield Static(id="whatif")
                with TabPane("Run", id="tab-run"), VerticalScroll(classes="panel",
                                                                  id="run-panel"):
                    yield DataTable(id="jobs", cursor_type="row")
                    yield Static(NOT_SENT, id="verdict")
        yield RankedFooter()

    @property
    def model(self) -> ConnectionModel:
        return self.store.connection(self.connection)

    async def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        for key, label in JOB_COLUMNS:
            table.add_column(label, key=key)
        self._bridge = StoreBridge(self.store, self, delay=REDRAW_INTERVAL)
        await self._refresh_list(0 if self.txn.actions else None)
        self._recheck()

    def on_unmount(self) -> None:
        if self._bridge is not None:
            self._bridge.close()

    # ------------------------------------------------------------------ state → view

    def on_store_changed(self, _message: StoreChanged) -> None:
        if self.run is None:
            self._recheck()
        else:
            self._draw_run()

    async def _refresh_list(self, select: int | None) -> None:
        lv = self.query_one("#actions", ListView)
        await lv.clear()
        await lv.extend(ListItem(Label(f"{i + 1}. {escape(a.summary())}"))
                        for i, a in enumerate(self.txn.actions))
        if select is not None and self.txn.actions:
            lv.index = max(0, min(select, len(self.txn.actions) - 1))
        await self._show_form()

    async def _show_form(self) -> None:
        form = self.query_one("#form", ActionForm)
        i = self.selected
        await form.show(self.txn.actions[i] if i is not None else None, self.model)

    @property
    def selected(self) -> int | None:
        lv = self.query_one("#actions", ListView)
        i = lv.index
        return i if i is not None and 0 <= i < len(self.txn.actions) else None

    def _recheck(self) -> None:
        """Re-run the checks and the what-if against the current state; redraw the panels."""
        model = self.model
        self.prepared = prepare(self.txn, model,
                                planned=planned_nodes(pending(self.targets, model)))
        p = self.prepared
        mode = self.txn.completion_mode
        self.query_one("#composer-title", Static).update(title_text(model, self.txn, p))
        self.query_one("#mode", Static).update(mode_text(mode))
        self.query_one("#preview", Static).update(preview_text(p))
        self.query_one("#checks", Static).update(checks_text(
            p, pending(self.targets, model), self.skipped, self._target_risks()))
        self.query_one("#whatif", Static).update(whatif_text(p.transaction, model, mode))

    def _draw_run(self) -> None:
        run = self.run
        if run is None:
            return
        table = self.query_one("#jobs", DataTable)
        with self.app.batch_update():
            for view in run.jobs() if run.accepted else ():
                cells = job_cells(view)
                if view.job_id not in table.rows:
                    table.add_row(*cells.values(), key=view.job_id)
                    continue
                for col, value in cells.items():
                    if table.get_cell(view.job_id, col) != value:
                        table.update_cell(view.job_id, col, value, update_width=True)
        text = self.query_one("#verdict", Static)
        if self.verdict is not None:
            text.update(verdict_text(self.verdict))
        elif run.accepted is None and run.verdict is not None:  # waiting for the link
            text.update(verdict_text(run.verdict) + "\nWaiting for the connection to come "
                        "back to ask QEMU for the jobs...")
        elif run.accepted:
            text.update("Sent. Waiting for every job to end...")

    # ------------------------------------------------------------------ editing

    @on(ListView.Highlighted, "#actions")
    async def _highlighted(self) -> None:
        form = self.query_one("#form", ActionForm)
        i = self.selected
        if i is not None and form.action is not self.txn.actions[i]:
            await self._show_form()

    @on(ActionForm.Edited)
    async def _edited(self, event: ActionForm.Edited) -> None:
        i = self.selected
        if i is None:
            return
        self.txn = self.txn.with_action(event.action, i)
        lv = self.query_one("#actions", ListView)
        item = lv.children[i] if i < len(lv.children) else None
        if item is not None:
            item.query_one(Label).update(f"{i + 1}. {escape(event.action.summary())}")
        self._recheck()

    def _editable(self) -> bool:
        if self.run is not None and self.verdict is None:
            self.notify("A transaction is running: wait for its verdict.", severity="warning")
            return False
        return True

    async def action_add(self) -> None:
        """Add a backup of the first drive (type, source and target are then edited)."""
        if not self._editable():
            return
        model = self.model
        # the first drive by name (QEMU lists nodes newest first)
        names = sorted(n.device for n in model.nodes.values() if n.device)
        dev = names[0] if names else next(iter(model.nodes), "")
        node = model.find_node(dev)
        bms = [b.name for b in node.named_bitmaps] if node else []
        data: dict[str, Any] = {"device": dev, "sync": "incremental" if bms else "full"}
        if bms:
            data["bitmap"] = bms[0]
        self.txn = self.txn.with_action(Action("blockdev-backup", data))
        self._new_run()
        await self._refresh_list(len(self.txn.actions) - 1)
        self._recheck()

    async def action_delete(self) -> None:
        i = self.selected
        if i is None or not self._editable():
            return
        self.txn = self.txn.without(i)
        self._new_run()
        await self._refresh_list(i)
        self._recheck()

    async def action_move(self, delta: int) -> None:
        i = self.selected
        if i is None or not self._editable():
            return
        self.txn = self.txn.moved(i, delta)
        await self._refresh_list(max(0, min(len(self.txn.actions) - 1, i + delta)))
        self._recheck()

    def action_toggle_mode(self) -> None:
        if not self._editable():
            return
        mode = GROUPED if self.txn.completion_mode == INDIVIDUAL else INDIVIDUAL
        self.txn = self.txn.with_mode(mode)
        self._new_run()
        self._recheck()  # the mode line says it: no toast over the panels

    def action_use_fix(self) -> None:
        """Replace the selected drive-backup by its blockdev-backup equivalent, first offering
        to open its target with ``blockdev-add`` (the equivalent needs the target node)."""
        if self.read_only:
            return
        i = self.selected
        if i is None or self.prepared is None or not self._editable():
            return
        fixes = [f for f in self.prepared.findings if f.index == i and f.fix is not None]
        if not fixes:
            self.notify("No fix offered for this action.")
            return
        finding = fixes[0]
        lines = [f"{cmd} {json.dumps(args)}" for cmd, args in finding.fix_prepare]
        lines.append(f"then action {i + 1} becomes: {finding.fix.summary() if finding.fix else ''}")

        def answered(yes: bool | None) -> None:
            if yes is None:
                return  # Esc: nothing changes
            self.run_worker(self._apply_fix(i, finding, yes), name="txn-fix",
                            exclusive=True, exit_on_error=False, group="txn")

        self.app.push_screen(ConfirmDialog(
            "Open the target now?", "\n".join(lines) + "\n\ny: open it now; n: only replace "
            "the action; esc: change nothing", "Open it", no_label="Only replace"), answered)

    async def _apply_fix(self, i: int, finding: Finding, run_prepare: bool) -> None:
        if run_prepare:
            for cmd, args in finding.fix_prepare:
                try:
                    await self._sending.conn.execute(cmd, args)
                except BitmapTuiError as exc:
                    self.notify(f"{cmd}: {exc}", severity="error")
                    return
        assert finding.fix is not None
        self.txn = self.txn.with_action(finding.fix, i)
        await self._refresh_list(i)
        self._recheck()
        self.notify(f"action {i + 1} is now a blockdev-backup")

    def action_view(self, tab: str) -> None:
        self.query_one("#right", TabbedContent).active = tab

    def action_next_view(self) -> None:
        tabs = self.query_one("#right", TabbedContent)
        i = self.VIEWS.index(tabs.active) if tabs.active in self.VIEWS else -1
        tabs.active = self.VIEWS[(i + 1) % len(self.VIEWS)]

    def action_save(self) -> None:
        """Save the transaction as YAML (asks for the file name)."""

        def chosen(name: str | None) -> None:
            if not name:
                return
            path = Path(name).expanduser()
            try:
                save(self.txn, path)
            except OSError as exc:
                self.notify(f"cannot save {path}: {exc.strerror or exc}", severity="error")
                return
            self.path = path
            self._clean = self.txn
            self.notify(f"saved {path}")

        self.app.push_screen(AskDialog("Save transaction", "File (YAML):",
                                       str(self.path or "transaction.yaml"), "Save"), chosen)

    def action_back(self) -> None:
        """Esc: from a form field back to the actions list; from the list, leave (asking first
        when there are unsent changes; they are kept as a draft)."""
        form = self.query_one("#form", ActionForm)
        focused = self.focused
        if focused is not None and (focused is form or form in focused.ancestors):
            self.query_one("#actions", ListView).focus()
            return
        if self.run is not None and self.verdict is None:
            self.notify("Jobs are still running; they are followed on the dashboard too.",
                        severity="warning")
            self.dismiss(None)
            return
        if not self.unsent:
            self.dismiss(None)
            return

        def answered(leave: bool | None) -> None:
            if leave:
                self.dismiss(self.draft())

        n = len(self.txn.actions)
        self.app.push_screen(ConfirmDialog(
            "Leave the composer?", f"The transaction ({n} action(s)) is not sent. It is kept: "
            "t on the dashboard reopens it.", "Leave", back_label="Stay"), answered)

    @on(ListView.Selected, "#actions")
    def _into_form(self) -> None:
        """Enter on an action: into its form (Esc comes back)."""
        form = self.query_one("#form", ActionForm)
        fields = [w for w in form.query("*") if w.focusable]
        if fields:
            fields[0].focus()

    def _new_run(self) -> None:
        """Edits after a verdict start a new transaction view."""
        if self.verdict is not None:
            self.run = None
            self.verdict = None
            self.query_one("#jobs", DataTable).clear()
            self.query_one("#verdict", Static).update(NOT_SENT)

    # ------------------------------------------------------------------ sending

    @property
    def read_only(self) -> bool:
        return self.context.read_only

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # read-only: the keys that would change QEMU are hidden (and refused if called)
        return not refuses(action, self.read_only)

    def action_send(self) -> None:
        if self.read_only:
            self.notify("read-only mode: nothing is sent", severity="error")
            return
        if not self._editable():
            return
        self._new_run()
        self._recheck()
        p = self.prepared
        assert p is not None
        tabs = self.query_one("#right", TabbedContent)
        if not p.ok:
            tabs.active = "tab-checks"
            self.notify(f"{len(p.errors)} error(s): fix them before sending", severity="error")
            return
        risks = ([str(w) for w in p.warnings] + [f"warning: {w}" for w in self._target_risks()]
                 + [f"warning: {w}" for w in self._chain_breaks()])
        if risks:  # risks to data ask first; notices need no answer
            self.app.push_screen(ConfirmDialog("Send despite these warnings?",
                                               "\n".join(risks), "Send anyway"),
                                 self._confirmed)
            return
        self._start(p)

    def _actions(self) -> list[tuple[str, dict[str, Any]]]:
        return [(a.type, dict(a.data)) for a in self.txn.actions]

    def _chain_breaks(self, *, record: bool = False) -> list[str]:
        """The backup-policy chains this transaction breaks (recorded in the ledger when sent,
        so their next run takes a full backup)."""
        return transaction_breaks(self.connection, self._actions(), self.context.ledger_path,
                                  record=record)

    def _target_risks(self) -> list[str]:
        """What creating the pending targets may overwrite (a QEMU on another machine)."""
        return [w for t in pending(self.targets, self.model) if (w := t.warning())]

    def _confirmed(self, yes: bool | None) -> None:
        if yes and self.prepared is not None:
            self._start(self.prepared)
        else:
            self.notify("not sent")

    def _run_changed(self) -> None:
        self.post_message(StoreChanged(self.store.generation))

    def _start(self, prepared: Prepared) -> None:
        self._chain_breaks(record=True)  # before anything is sent
        self.query_one("#right", TabbedContent).active = "tab-run"
        self.run_worker(self._send(prepared), name="txn-send", exclusive=True,
                        exit_on_error=False, group="txn")

    async def _send(self, prepared: Prepared) -> Verdict | None:
        """Create the planned targets through QEMU, then send and follow the transaction."""
        todo = pending(self.targets, self.model)
        if todo:
            text = self.query_one("#verdict", Static)
            text.update(escape(f"Creating {len(todo)} target image(s) through QEMU..."))
            try:
                await self._sending.create(todo, self.model)
            except BitmapTuiError as exc:
                text.update(f"[b]NOT SENT[/b]\n{escape(str(exc))}")
                return None
            self._recheck()
            assert self.prepared is not None
            if not self.prepared.ok:
                self.query_one("#right", TabbedContent).active = "tab-checks"
                return None
            prepared = self.prepared
        self.run = TransactionRun(self._sending.conn, prepared, on_change=self._run_changed)
        self._draw_run()
        return await self._follow(self.run)

    async def _follow(self, run: TransactionRun) -> Verdict:
        verdict = await self._sending.follow(run)
        self.verdict = verdict
        if verdict.accepted:
            self._clean = self.txn  # sent: nothing left to lose
        self._draw_run()
        # the verdict is read in its own focused, scrollable panel (no toast over it)
        self.query_one("#right", TabbedContent).active = "tab-run"
        self.query_one("#run-panel", VerticalScroll).focus()
        return verdict

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            err = event.worker.error
            msg = str(err) if isinstance(err, BitmapTuiError) else f"{type(err).__name__}: {err}"
            self.notify(f"transaction: {msg}", severity="error")
