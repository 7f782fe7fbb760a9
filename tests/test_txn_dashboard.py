"""From the dashboard to a verdict: the transaction keys and palette commands of the dashboard."""

from __future__ import annotations

from tests.conftest import requires_qemu, wait_for
from tests.dashboard_kit import running
from tui.sandbox import QEMU_IMG, run
from tui.ui.palette import commands_for
from tui.ui.screens.composer import ComposerScreen
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.txn_dialogs import PatternDialog

pytestmark = requires_qemu


async def test_backup_every_drive_from_the_dashboard(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2)
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "1M")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(sb.path(f"drive{d}-incr-1.qcow2")),
             "64M"])
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    async with running(fleet) as (app, pilot, dash):
        await pilot.press("B")
        await pilot.pause()
        assert isinstance(app.screen, PatternDialog)
        assert app.screen.drives == ["drive0", "drive1"]
        await pilot.press("enter")  # the default pattern: next to each drive's image
        await pilot.pause()
        composer = app.screen
        assert isinstance(composer, ComposerScreen)
        assert composer.txn.completion_mode == "grouped"
        assert [a.data["target"] for a in composer.txn.actions] == [
            str(sb.path(f"drive{d}-incr-1.qcow2")) for d in (0, 1)]
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)  # drive-backup is deprecated
        await pilot.press("y")
        await wait_for(lambda: composer.verdict is not None, 60, "the verdict")
        assert composer.verdict is not None and composer.verdict.all_succeeded
        assert [b.outcome for b in composer.verdict.bitmaps] == ["cleared", "cleared"]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dash


async def test_compose_and_backup_of_the_selected_drive(sandbox, fleet_for):
    await sandbox.add_bitmap(1, "bitmap1")
    fleet = await fleet_for(sandbox)
    async with running(fleet) as (app, pilot, dash):
        assert dash.select_bitmap("vm0", "disk1")
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, PatternDialog) and app.screen.drives == ["drive1"]
        app.screen.query_one("#pattern").value = "/b/{node}-{n}.qcow2"
        await pilot.press("enter")
        await pilot.pause()
        composer = app.screen
        assert isinstance(composer, ComposerScreen)
        assert [(a.data["device"], a.data["bitmap"], a.data["target"])
                for a in composer.txn.actions] == [("drive1", "bitmap1", "/b/disk1-1.qcow2")]
        await pilot.press("escape")
        await pilot.pause()
        # the palette offers the transaction commands on the dashboard
        titles = [c.title for c in commands_for(app, dash)]
        assert {"transaction: Compose", "transaction: Incremental backup of this drive",
                "transaction: Incremental backup of every drive"} <= set(titles)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ComposerScreen) and not app.screen.txn.actions


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
