"""From the dashboard to a verdict: the transaction keys and palette commands of the dashboard."""

from __future__ import annotations

import os

from textual.widgets import Static

from tests.kit.common import requires_qemu, wait_for
from tests.kit.dashboard import running
from tui.demo.sandbox import QEMU_IMG, run
from tui.ui.palette import commands_for
from tui.ui.screens.composer import ComposerScreen
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.txn_dialogs import PatternDialog

pytestmark = requires_qemu


async def test_backup_every_drive_from_the_dashboard(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=3)
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "1M")
    # an image of an earlier backup is in the way: the counter goes past it
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(sb.path("drive0-incr-1.qcow2")), "64M"])
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    async with running(fleet) as (app, pilot, dash):
        await pilot.press("B")
        await pilot.pause()
        assert isinstance(app.screen, PatternDialog)
        assert app.screen.drives == ["drive0", "drive1"]
        assert app.screen.skipped == [
            "drive2: skipped (no bitmap: add one (n) and take a full backup first)"]
        await pilot.press("enter")  # the default pattern: next to each drive's image
        await pilot.pause()
        composer = app.screen
        assert isinstance(composer, ComposerScreen)
        assert composer.txn.completion_mode == "grouped"
        assert [t.path for t in composer.targets] == [
            str(sb.path("drive0-incr-2.qcow2")), str(sb.path("drive1-incr-1.qcow2"))]
        assert [(a.type, a.data["target"]) for a in composer.txn.actions] == [
            ("blockdev-backup", "drive0-incr-2"), ("blockdev-backup", "drive1-incr-1")]
        # the planned target is not a node yet: the form says it will be, not that it is missing
        shown = composer.query_one("#f-target").query_one("SelectCurrent #label", Static)
        assert str(shown.render()) == "drive0-incr-2 (created when sent)"
        await pilot.press("s")  # no dialog: nothing risks data
        await wait_for(lambda: composer.verdict is not None, 60, "the verdict")
        assert composer.verdict is not None and composer.verdict.all_succeeded
        assert [b.outcome for b in composer.verdict.bitmaps] == ["cleared", "cleared"]
        assert all(os.path.exists(t.path) for t in composer.targets)  # noqa: ASYNC240
        assert app.focused is composer.query_one("#run-panel")
        # the target's create jobs were dismissed by the console: not left in the jobs table
        assert not [j for j in fleet["vm0"].model.jobs.values() if j.type == "create"]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dash  # sent: nothing to ask about


async def test_compose_and_backup_of_the_selected_drive(sandbox, fleet_for):
    await sandbox.add_bitmap(1, "bitmap1")
    await sandbox.add_bitmap(1, "other", disabled=True)
    fleet = await fleet_for(sandbox)
    async with running(fleet) as (app, pilot, dash):
        # the bitmap under the cursor is the one used (here a disabled one: the checks warn)
        assert dash.select_bitmap("vm0", "disk1", "other")
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, PatternDialog) and app.screen.drives == ["drive1"]
        app.screen.query_one("#pattern").value = "/b/{node}-{n}.qcow2"
        await pilot.press("enter")
        await pilot.pause()
        composer = app.screen
        assert isinstance(composer, ComposerScreen)
        assert [(a.data["device"], a.data["bitmap"], a.data["target"])
                for a in composer.txn.actions] == [("disk1", "other", "disk1-1")]
        assert [t.path for t in composer.targets] == ["/b/disk1-1.qcow2"]
        assert composer.prepared is not None
        assert [w.message.split(":")[0] for w in composer.prepared.warnings] == [
            "bitmap 'other' on disk1 is disabled"]
        # Esc with an unsent transaction asks; "Stay" keeps everything
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is composer and len(composer.txn.actions) == 1
        await pilot.press("escape", "y")
        await pilot.pause()
        assert app.screen is dash
        # the palette offers the transaction commands on the dashboard
        titles = [c.title for c in commands_for(app, dash)]
        assert {"transaction: Compose", "transaction: Incremental backup of this drive",
                "transaction: Incremental backup of every drive"} <= set(titles)
        # t brings the unsent transaction back, targets and all
        await pilot.press("t")
        await pilot.pause()
        again = app.screen
        assert isinstance(again, ComposerScreen) and again.txn == composer.txn
        assert again.targets == composer.targets
        await pilot.press("escape", "y")
        await pilot.pause()
        # b with a draft asks before replacing it; Keep it changes nothing
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dash and dash.ops.drafts["vm0"].transaction == composer.txn


async def test_help_on_the_composer_lists_its_keys(sandbox, fleet_for):
    fleet = await fleet_for(sandbox)
    async with running(fleet) as (app, pilot, dash):
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ComposerScreen)
        areas = dict(app.key_help())
        assert ("m", "Mode") in areas["Transaction composer"]
        assert ("s", "Send") in areas["Transaction composer"]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dash and "Transaction composer" not in dict(app.key_help())
