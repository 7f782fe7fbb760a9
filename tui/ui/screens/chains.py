"""Backup chains: per drive its images and states, the next base, VM-wide points and problems.

Keys: ``r`` runs a policy (preview, confirm, send), ``R`` restores the selected image's point to a
new file (after a confirmation naming it), ``x`` applies the selected problem's fix
(after confirmation: a bitmap command, or deleting INVALID/UNKNOWN image files), ``v`` verifies the chains (``qemu-img check``), ``g`` re-reads, ``escape``
goes back. The data comes from
:mod:`tui.core.chains.view`; running goes through :mod:`tui.core.chains.run` (the same code as headless).
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, OptionList, Static

from tui.core.base.errors import BitmapTuiError, NotConnectedError
from tui.core.base.format import human_bytes
from tui.core.base.text import LINE_LIMIT, shown
from tui.core.chains.chain import chain_state
from tui.core.chains.points import list_points
from tui.core.chains.policy import Policy
from tui.core.chains.reconcile import reconcile
from tui.core.chains.run import preview, run_policy
from tui.core.chains.view import ChainsView, Problem, build_view
from tui.core.ledger.points_repository import PointsLedger
from tui.core.qmp.connection import Connection
from tui.session import ConsoleContext
from tui.ui.actions import CHAINS, DIALOG, bindings, refuses
from tui.ui.bridge import StoreBridge, StoreChanged
from tui.ui.messages import ChainsVerified, PolicyRunFinished, RestoreFinished
from tui.ui.palette import PaletteCommand
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.widgets.footer import RankedFooter

RELOAD_DELAY = 0.2  # coalesce bursts of store changes into one reload


def no_backups_hint(policies: dict[str, Policy]) -> str:
    """What an empty chains screen suggests: run a policy, or write one first."""
    if policies:
        return "no backups yet: press r to run a policy"
    return ("no backups yet, and no policy: add one to the config file (key 'policies'); "
            "b / B on the dashboard back up without one")


class PolicyPicker(ModalScreen[str | None]):
    """Choose one of several policies."""

    BINDINGS = bindings(DIALOG)

    def __init__(self, names: list[str]) -> None:
        super().__init__(classes="dialog")
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = "Run which policy?"
            yield OptionList(*self.names, id="policies")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.names[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChainsScreen(Screen[None]):
    """The chain view of every drive the ledger knows, live against the fleet."""

    DEFAULT_CSS = """
    ChainsScreen #chains { height: auto; max-height: 60%; }
    ChainsScreen #next { height: auto; max-height: 8; padding: 0 1; }
    ChainsScreen #problems { height: 1fr; min-height: 4; }
    """

    BINDINGS = bindings(CHAINS)
    ACTION_GROUPS = ("chains",)

    def __init__(self, context: ConsoleContext, ledger_path: Path) -> None:
        super().__init__()
        self.store = context.store
        self.fleet = context.fleet
        self.read_only = context.read_only
        self.audit = context.audit
        self.policies = dict(context.policies)
        # The session's ledger, with the restore-point tables (PointsLedger).
        self.ledger = PointsLedger(ledger_path)
        self.view_data = ChainsView()
        # Last verification: one line per check ("PASS check /path: no errors").
        self.verify_lines: list[str] = []
        self._bridge: StoreBridge | None = None
        # The image of each row of the chains table (for R), and the last restore's line.
        self.row_images: list[str] = []
        self.restore_line = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="chains-main"):
            yield DataTable(id="chains", cursor_type="row", zebra_stripes=True)
            yield Static("", id="next")
            yield DataTable(id="problems", cursor_type="row")
        yield RankedFooter()

    def on_mount(self) -> None:
        chains = self.query_one("#chains", DataTable)
        chains.add_columns("Drive", "Image", "Kind")
        # Fixed: wide enough for "UNKNOWN (deleted)". A rebuilt table does not redraw rows
        # already drawn when an auto-width column later grows (Textual's row cache).
        chains.add_column("State", width=len("UNKNOWN (deleted)"))
        chains.add_column("Size")
        problems = self.query_one("#problems", DataTable)
        # the fix under its problem: both readable at 80 columns
        problems.add_columns("#", "Problem, then its suggested fix")
        # Bitmap changes (lost/orphan) come from the store: at most one reload per RELOAD_DELAY.
        self._bridge = StoreBridge(self.store, self, delay=RELOAD_DELAY)
        self.reload()

    def _timeline(self) -> dict[tuple[str, str], str]:
        """Each drive's restore points, oldest first: ``#1 full 10:01 valid · #2 incr ...``
        (what ``bitmap-tui points`` lists, and ``R`` restores)."""
        out: dict[tuple[str, str], list[str]] = {}
        for p in list_points(self.ledger):
            kind = "full" if p.kind == "full" else "incr"
            when = time.strftime("%m-%d %H:%M", time.localtime(p.time))
            out.setdefault((p.connection, p.drive), []).append(
                f"#{p.point} {kind} {when} {p.verdict}")
        return {k: " · ".join(v) for k, v in out.items()}

    def on_unmount(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
        self.ledger.close()

    def _connection(self, name: str) -> Connection:
        """The open connection ``name`` (NotConnectedError, one line, when it is not open)."""
        if self.fleet is None or name not in self.fleet.connections:
            raise NotConnectedError(f"connection '{name}' is not open")
        return self.fleet.connections[name]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not refuses(action, self.read_only)

    # ------------------------------------------------------------------ rendering

    def on_store_changed(self, _message: StoreChanged) -> None:
        if self.is_attached:
            self.reload()

    def reload(self) -> None:
        """Rebuild the view from the ledger and the live state and redraw the tables."""
        self.view_data = build_view(self.ledger, self.store.state)
        chains = self.query_one("#chains", DataTable)
        chains.clear()
        self.row_images = []
        for d in self.view_data.drives:
            for i, im in enumerate(d.chain):
                self.row_images.append(im.path)
                label = f"{d.connection}/{d.drive}" if i == 0 else ""
                size = human_bytes(im.size) if im.size is not None else "?"
                state = im.state.upper() + (" (deleted)" if im.deleted else "")
                chains.add_row(*(Text(shown(c)) for c in (label, os.path.basename(im.path), im.kind,
                                                   state, size)))
        lines = []
        timeline = self._timeline()
        for d in self.view_data.drives:
            nxt = f"incremental on {os.path.basename(d.next_base)}" if d.next_base else "full backup"
            lines.append(f"{d.drive}: next {nxt} ({d.next_reason}); bitmap {d.bitmap_state}")
            if (d.connection, d.drive) in timeline:
                lines.append(f"  points: {timeline[(d.connection, d.drive)]}")
        for p in self.view_data.points:
            lines.append(f"VM-wide point ({p.connection}, {p.policy}): transaction {p.txn_id}")
        for b in self.view_data.bitmaps:
            lines.append(f"bitmap {b.node}/{b.name}: {b.owner}{'' if b.ours else ' (not ours)'}")
        if not self.view_data.drives:
            lines.append(no_backups_hint(self.policies))
        lines += self.verify_lines
        if self.restore_line:
            lines.append(self.restore_line)
        self.query_one("#next", Static).update(Text("\n".join(shown(line, LINE_LIMIT) for line in lines)))
        problems = self.query_one("#problems", DataTable)
        problems.clear()
        width = max(self.size.width - 8, 30)
        for n, pr in enumerate(self.view_data.problems, 1):
            # wrapped to the screen, so the problem and its fix are read whole at 80 columns
            lines = textwrap.wrap(shown(f"[{pr.kind}] {pr.text}", LINE_LIMIT), width) + textwrap.wrap(
                shown(f"fix (x): {pr.fix}", LINE_LIMIT), width, initial_indent="  ",
                subsequent_indent="    ")
            # Text, not markup: "[orphan]" and bitmap names must show as they are.
            problems.add_row(Text(str(n)), Text("\n".join(lines)), height=len(lines))

    def on_resize(self) -> None:
        self.reload()

    def action_reload(self) -> None:
        self._reconcile_and_reload()

    @work(exclusive=True, group="chains-reload", exit_on_error=False)
    async def _reconcile_and_reload(self) -> None:
        try:
            await self.reconcile_now()
        except BitmapTuiError as exc:
            self.notify(str(exc), title="reconcile", severity="error")
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

    # ------------------------------------------------------------------ run a policy

    def action_run_policy(self) -> None:
        if not self.policies:
            self.notify("no policies in the config file (key 'policies')", severity="error")
            return
        names = sorted(self.policies)
        if len(names) == 1:
            self._confirm_run(names[0])
        else:
            self.app.push_screen(PolicyPicker(names), lambda name: self._confirm_run(name) if name else None)

    def _confirm_run(self, name: str) -> None:
        pol = self.policies[name]
        conn = self.fleet.connections.get(pol.connection) if self.fleet is not None else None
        if conn is None:
            self.notify(f"policy {name}: connection '{pol.connection}' is not open", severity="error")
            return
        plan, lines = preview(self.ledger, conn.model, pol, compact=True)
        if plan.errors:
            self.notify("; ".join(plan.errors), title=f"policy {name} refused", severity="error")
            return
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._run(pol)

        self.app.push_screen(
            ConfirmDialog(f"Run policy {name} ({plan.mode})", "\n".join(lines), "Run"), confirmed
        )

    @work(exclusive=True, group="chains-run", exit_on_error=False)
    async def _run(self, pol: Policy) -> None:
        try:
            result = await run_policy(self._connection(pol.connection), self.ledger, pol)
        except BitmapTuiError as exc:
            self.notify(str(exc), title=f"policy {pol.name}", severity="error")
            self.post_message(PolicyRunFinished(None, str(exc)))
            return
        finally:
            self.reload()
        self.post_message(PolicyRunFinished(result))
        states = ", ".join(f"{d.drive} {str(d.state).upper()}" for d in result.drives)
        if result.refused:
            self.notify(result.refused, title=f"policy {pol.name} refused", severity="error", timeout=10)
        else:
            self.notify(f"{states}\n" + "\n".join(result.next), title=f"policy {pol.name}",
                        severity="information" if result.exit_code == 0 else "warning", timeout=10)

    # ------------------------------------------------------------------ restore (R)

    def action_restore_point(self) -> None:
        """Restore the selected row's point to a new file next to its chain, after confirming."""
        from tui.core.chains.points import list_points

        row = self.query_one("#chains", DataTable).cursor_row
        if not 0 <= row < len(self.row_images):
            self.notify("select an image of a chain first", severity="error")
            return
        with PointsLedger(self.ledger.path) as points_ledger:
            paths = {i.id: i.path for i in points_ledger.images()}
            point = next((p for p in list_points(points_ledger)
                          if paths.get(p.image_id) == self.row_images[row]), None)
        if point is None or not point.restorable:
            why = point.verdict.upper() if point is not None else "not a point"
            self.notify(f"{os.path.basename(self.row_images[row])}: cannot be restored ({why})",
                        severity="error")
            return
        target = os.path.join(os.path.dirname(point.image),
                              f"restore-{point.drive}-point-{point.point}.qcow2")

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._restore(point, target)

        self.app.push_screen(ConfirmDialog(
            f"Restore {point.drive} point {point.point}",
            f"Write {point.drive} as it was at point {point.point} ({point.kind}) to\n{target}\n"
            "(a new standalone qcow2 image, checked against the chain; nothing is overwritten)",
            "Restore"), confirmed)

    @work(exclusive=True, group="chains-restore", exit_on_error=False)
    async def _restore(self, point: Any, target: str) -> None:
        from tui.core.chains.restore import chain_is_local, restore_local, restore_qemu

        def progress(done: int, total: int) -> None:
            self.restore_line = f"restoring {point.drive} point {point.point}: {100 * done / total:.0f}%"
            self.app.call_from_thread(self.reload)

        def local() -> Any:
            with PointsLedger(self.ledger.path) as own:  # SQLite objects stay in their thread
                return restore_local(own, point, target, "qcow2", on_progress=progress,
                                     audit=self.audit)

        self.restore_line = f"restoring {point.drive} point {point.point} to {target}…"
        self.reload()
        try:
            if chain_is_local(point):
                result = await asyncio.to_thread(local)
            else:
                conn = self._connection(point.connection)
                with PointsLedger(self.ledger.path) as own:
                    result = await restore_qemu(conn, own, point, target, "qcow2",
                                                local_files=False)
        except (BitmapTuiError, KeyError) as exc:
            self.restore_line = f"restore of {point.drive} point {point.point} failed: {exc}"
            self.notify(self.restore_line, severity="error", timeout=10)
        else:
            checked = {True: "checked", False: "check FAILED", None: "not checked"}[result.checked]
            self.restore_line = f"restored {point.drive} point {point.point} to {target} ({checked})"
            self.notify(self.restore_line, title="restore", timeout=10)
        self.post_message(RestoreFinished(self.restore_line))
        self.reload()

    # ------------------------------------------------------------------ verify

    def action_verify(self) -> None:
        self.notify("verifying every drive's chain (qemu-img check)…")
        self._verify()

    @work(exclusive=True, group="chains-verify", exit_on_error=False)
    async def _verify(self) -> None:
        """``qemu-img check`` of every image of each drive's current chain, off the UI thread."""
        from tui.core.chains.verify import chain_paths, check_image

        def check_all(paths: list[str]) -> list[Any]:
            return [check_image(p) for p in paths]

        lines: list[str] = []
        failed = 0
        for d in self.view_data.drives:
            top = chain_state(self.ledger, d.connection, d.drive).restore_point
            if top is None:
                lines.append(f"{d.drive}: no valid chain to verify")
                continue
            # The ledger is read here (SQLite objects stay in their thread); qemu-img runs off it.
            for c in await asyncio.to_thread(check_all, chain_paths(self.ledger, top)):
                failed += not c.ok
                lines.append(f"{'PASS' if c.ok else 'FAIL'} {c.what} {os.path.basename(c.path)}: {c.detail}")
        self.verify_lines = lines
        self.reload()
        self.post_message(ChainsVerified(lines))
        self.notify(f"verify: {failed} failed" if failed else "verify: every image passed",
                    severity="error" if failed else "information")

    # ------------------------------------------------------------------ fixes

    def action_fix(self) -> None:
        problems = self.query_one("#problems", DataTable)
        if not self.view_data.problems:
            self.notify("no problems to fix")
            return
        row = problems.cursor_row if 0 <= problems.cursor_row < len(self.view_data.problems) else 0
        self.fix_problem(row)

    def fix_problem(self, index: int) -> None:
        """Apply problem ``index``'s fix after a confirmation (or just say what to do)."""
        if self.read_only or not 0 <= index < len(self.view_data.problems):
            return
        pr = self.view_data.problems[index]
        if pr.image_ids:
            self._confirm_delete(pr)
            return
        if pr.command is None:
            self.notify(pr.fix, title=f"{pr.kind}: nothing to send")
            return
        cmd, args = pr.command
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._apply(pr.connection, cmd, args)

        self.app.push_screen(
            ConfirmDialog(f"Fix: {pr.kind}", f"{pr.text}\nSend {cmd} {args}?", "Send"), confirmed
        )

    @work(exclusive=True, group="chains-fix", exit_on_error=False)
    async def _apply(self, connection: str, cmd: str, args: dict[str, Any]) -> None:
        try:
            await self._connection(connection).execute(cmd, args)
            self.notify(f"sent {cmd}")
        except BitmapTuiError as exc:
            self.notify(str(exc), title=cmd, severity="error")
        self.reload()

    def _confirm_delete(self, pr: Problem) -> None:
        if pr.remote:
            # Not our files: QEMU's host is another machine. Say which to delete there.
            self.notify("cannot delete files on the remote QEMU host; delete these there:\n"
                        + "\n".join(pr.paths), title="invalid images", severity="warning", timeout=20)
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._delete(pr)

        files = "\n".join(f"  {p}" for p in pr.paths)
        self.app.push_screen(ConfirmDialog(
            f"Delete {len(pr.paths)} invalid image(s)?",
            f"{pr.text}\nThese files will be deleted:\n{files}", "Delete"), confirmed)

    @work(exclusive=True, group="chains-fix", exit_on_error=False)
    async def _delete(self, pr: Problem) -> None:
        from tui.core.chains.cleanup import delete_images

        live = self.store.state.connections.get(pr.connection)
        open_files = {n.file for n in live.nodes.values() if n.file} if live is not None else set()
        result = delete_images(self.ledger, pr.connection, pr.image_ids, open_files,
                               audit=self.audit)
        self.notify("\n".join(result.lines()), title="invalid images",
                    severity="information" if result.ok else "error", timeout=10)
        self.reload()

    # ------------------------------------------------------------------ palette

    def context_commands(self) -> list[PaletteCommand]:
        """Palette: run each policy, verify, apply each problem's fix (not in read-only)."""
        out: list[PaletteCommand] = []
        if not self.read_only:
            for name in sorted(self.policies):
                pol = self.policies[name]
                out.append(PaletteCommand(f"chains: Run policy {name}",
                                          f"back up {', '.join(pol.drives)} on {pol.connection}",
                                          partial(self._confirm_run, name)))
        out.append(PaletteCommand("chains: Verify", "qemu-img check every drive's chain",
                                  self.action_verify))
        out.append(PaletteCommand("chains: Reload", "re-read the ledger and the live state",
                                  self.action_reload))
        if not self.read_only:
            for n, pr in enumerate(self.view_data.problems):
                if pr.command is None and not pr.image_ids:
                    continue  # "run the policy": the Run policy commands do that
                out.append(PaletteCommand(f"chains: Apply fix {n + 1}: {pr.fix}", pr.text,
                                          partial(self.fix_problem, n)))
        out.append(PaletteCommand("chains: Back", "back to the dashboard", self.action_back))
        out.append(PaletteCommand("help: Keys", "every key of this screen",
                                  self.app.action_help))  # type: ignore[attr-defined]
        return out

    async def reconcile_now(self) -> None:
        """Resolve open transactions of every connected connection (also run on reconnects)."""
        if self.fleet is None or self.read_only:
            return
        for conn in self.fleet.connections.values():
            if conn.connected:
                await reconcile(conn, self.ledger)
        self.reload()
