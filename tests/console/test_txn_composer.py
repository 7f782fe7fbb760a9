"""The composer screen driven by Pilot against a real QEMU: compose, toggle, send, read."""

from __future__ import annotations

import json
from typing import Any

from textual.app import App
from textual.widgets import Input, ListView, Select, Static, TabbedContent

from tests.kit.common import requires_qemu, wait_for
from tui.core.txn import Transaction
from tui.core.txn.model import Action
from tui.demo.sandbox import QEMU_IMG, run
from tui.session import ConsoleContext
from tui.ui.screens.composer import ComposerScreen
from tui.ui.screens.dialogs import ConfirmDialog

pytestmark = requires_qemu


class ComposerApp(App[None]):
    """The smallest host: any App can push the composer with a Fleet and a connection name."""

    def __init__(self, fleet: Any, txn: Transaction | None = None) -> None:
        super().__init__()
        self.fleet = fleet
        self.txn = txn

    def on_mount(self) -> None:
        self.push_screen(ComposerScreen(ConsoleContext.of_fleet(self.fleet), "vm0", self.txn))


def text(widget: Static) -> str:
    return str(widget.render())


async def set_field(pilot, screen: ComposerScreen, key: str, value: Any) -> None:
    widget = screen.query_one(f"#f-{key}")
    assert isinstance(widget, (Select, Input))
    widget.value = value
    await pilot.pause()


async def test_compose_toggle_send_and_read_the_grouped_verdict(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2, failing=[1])
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "1M")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(sb.path(f"d{d}-incr-1.qcow2")), "64M"])
    await sb.arm_read_error(1)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    app = ComposerApp(fleet)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        for d in (0, 1):
            await pilot.press("a")
            await pilot.pause()
            assert screen.selected == d
            await set_field(pilot, screen, "type", "drive-backup")
            await set_field(pilot, screen, "device", f"drive{d}")
            # the bitmap choices follow the chosen drive (live state)
            bitmap_sel = screen.query_one("#f-bitmap", Select)
            assert [v for _, v in bitmap_sel._options if v != Select.NULL] == [f"bitmap{d}"]
            await set_field(pilot, screen, "bitmap", f"bitmap{d}")
            await set_field(pilot, screen, "sync", "incremental")
            await set_field(pilot, screen, "target", str(sb.path(f"d{d}-incr-1.qcow2")))
            await set_field(pilot, screen, "format", "qcow2")
            await set_field(pilot, screen, "mode", "existing")
        assert [a.data for a in screen.txn.actions] == [
            {"device": f"drive{d}", "sync": "incremental", "bitmap": f"bitmap{d}",
             "target": str(sb.path(f"d{d}-incr-1.qcow2")), "format": "qcow2", "mode": "existing"}
            for d in (0, 1)]
        await pilot.press("m")
        await pilot.pause()
        assert screen.txn.completion_mode == "grouped"
        preview = json.loads(text(screen.query_one("#preview", Static)).split("\n", 1)[1])
        assert preview["properties"] == {"completion-mode": "grouped"}
        assert [a["data"]["job-id"] for a in preview["actions"]] == ["drive0", "drive1"]
        whatif = text(screen.query_one("#whatif", Static))
        assert "if drive1's job (drive1) fails:" in whatif
        assert "re-run the same transaction" in whatif

        await pilot.press("s")  # drive-backup is deprecated: a notice, sent without asking
        await wait_for(lambda: screen.verdict is not None, 60, "the verdict")
        await pilot.pause(0.3)
        assert screen.query_one("#right", TabbedContent).active == "tab-run"
        shown = text(screen.query_one("#verdict", Static))
        assert "VERDICT" in shown
        assert "job drive0 (drive0) CANCELLED" in shown
        assert "job drive1 (drive1) FAILED: Input/output error" in shown
        assert "d0-incr-1.qcow2: INVALID (delete)" in shown
        assert "bitmap disk1/bitmap1: restored" in shown
        table = screen.query_one("#jobs")
        assert table.row_count == 2
        assert [table.get_cell(j, "result") for j in ("drive0", "drive1")] == ["CANCELLED", "FAILED"]
        assert table.get_cell("drive0", "status") == "ended"


async def test_reorder_delete_and_refusal_sends_nothing(sandbox, fleet_for):
    await sandbox.add_bitmap(0, "bitmap0")
    fleet = await fleet_for(sandbox)
    txn = Transaction((
        Action("block-dirty-bitmap-clear", {"node": "drive0", "name": "bitmap0"}),
        Action("block-dirty-bitmap-add", {"node": "drive1", "name": "b1"}),
        Action("block-dirty-bitmap-add", {"node": "drive1", "name": "b2"}),
    ), "grouped")
    app = ComposerApp(fleet, txn)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        lv = screen.query_one("#actions", ListView)
        lv.focus()
        await pilot.pause()
        await pilot.press("down", "shift+up")
        await pilot.pause()
        assert [a.data["name"] for a in screen.txn.actions] == ["b1", "bitmap0", "b2"]
        await pilot.press("x")  # the selection followed the moved action
        await pilot.pause()
        assert [a.data["name"] for a in screen.txn.actions] == ["bitmap0", "b2"]
        # grouped + bitmap actions: refused, the checks tab explains, nothing sent
        await pilot.press("s")
        await pilot.pause()
        assert screen.run is None
        assert screen.query_one("#right", TabbedContent).active == "tab-checks"
        assert "cannot be part of a grouped transaction" in text(screen.query_one("#checks", Static))
        await pilot.press("m", "s")
        await wait_for(lambda: screen.verdict is not None, 30, "the verdict")
        assert screen.verdict is not None and screen.verdict.accepted
        names = {b.name for b in fleet.store.connection("vm0").nodes["disk1"].named_bitmaps}
        assert names == {"b2"}
        assert screen.verdict.bitmaps[0].outcome == "cleared"


async def test_fix_replaces_drive_backup_by_blockdev_backup(sandbox, fleet_for):
    await sandbox.add_bitmap(0, "bitmap0")
    await sandbox.write(0, 0, "64k")  # something to back up (an empty bitmap is a warning)
    img = sandbox.path("d0-incr-1.qcow2")
    full = sandbox.path("d0-full.qcow2")
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(full), "64M"])
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(full), str(img)])
    fleet = await fleet_for(sandbox)
    txn = Transaction((Action("drive-backup", {
        "device": "drive0", "bitmap": "bitmap0", "format": "qcow2", "mode": "existing",
        "sync": "incremental", "target": str(img)}),))
    app = ComposerApp(fleet, txn)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        assert screen.prepared is not None and len(screen.prepared.notices) == 1
        screen.query_one("#actions", ListView).focus()
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")  # open the target with blockdev-add, then replace
        await wait_for(lambda: screen.txn.actions[0].type == "blockdev-backup", 20, "the fix")
        assert "d0-incr-1" in fleet.store.connection("vm0").nodes
        await pilot.pause()
        assert screen.prepared.ok and not screen.prepared.notices
        await pilot.press("s")
        await wait_for(lambda: screen.verdict is not None, 30, "the verdict")
        assert screen.verdict.all_succeeded
        assert screen.verdict.images[0].path == str(img)


async def test_palette_offers_transaction_commands(sandbox, fleet_for):
    fleet = await fleet_for(sandbox)
    app = ComposerApp(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"toggle completion")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(lambda: screen.txn.completion_mode == "grouped", 10, "the mode toggle")
        # "add" from the palette: a backup of the first drive, job-id filled in when prepared
        await pilot.press("ctrl+p")
        await pilot.press(*"add action")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(lambda: len(screen.txn.actions) == 1, 10, "the new action")
        assert screen.txn.actions[0].data["device"] == "drive0"


async def test_live_group_view_shows_progress(sandbox, fleet_for):
    await sandbox.write(0, 0, "8M")
    fleet = await fleet_for(sandbox, job_poll_interval=0.1)
    await fleet["vm0"].execute("blockdev-add", {"driver": "null-co", "node-name": "t0",
                                                "size": 64 * 2**20})
    txn = Transaction((Action("blockdev-backup", {"device": "drive0", "sync": "full",
                                                  "target": "t0", "speed": 1 << 20}),))
    app = ComposerApp(fleet, txn)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        await pilot.press("s")
        table = screen.query_one("#jobs")

        def cell(col: str) -> str:
            return str(table.get_cell("drive0", col)) if "drive0" in table.rows else ""

        await wait_for(lambda: cell("status") == "running"
                       and cell("progress").strip() not in ("", "0%"), 30, "progress shown")
        assert cell("result") == "" and screen.verdict is None
        await sandbox.qmp("block-job-set-speed", {"device": "drive0", "speed": 0})
        await wait_for(lambda: screen.verdict is not None, 30, "the verdict")
        await pilot.pause(0.3)
        assert cell("result") == "COMPLETED" and cell("progress").strip() == "100%"
