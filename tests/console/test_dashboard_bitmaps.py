"""Bitmap operations through the dashboard against a real QEMU: keys, dialogs, refusals, state."""

from __future__ import annotations

import pytest

from tests.kit.common import requires_qemu
from tests.kit.dashboard import bitmap, outcome, outcomes_seen, running, sent_commands, settle
from tui.core.base.audit import AuditLog
from tui.core.model.state import BitmapState
from tui.ui.screens.bitmap_dialogs import AddBitmapDialog, MergeDialog
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.widgets.nodes import FIXED_COLUMNS

pytestmark = requires_qemu


@pytest.fixture
async def vm(sandbox, fleet_for, tmp_path):
    """A QEMU with bm0 (dirty 1 MiB) on disk0 and other on disk1; the fleet audits to a file."""
    await sandbox.add_bitmap(0, "bm0")
    await sandbox.add_bitmap(1, "other")
    await sandbox.write(0, 0, "1M")
    await sandbox.write(1, "4M", "2M")
    audit = tmp_path / "audit.jsonl"
    fleet = await fleet_for(sandbox, audit=AuditLog(audit), job_poll_interval=0.1)
    return sandbox, fleet, audit


async def test_add_bitmap_through_dialog(vm):
    sb, fleet, audit = vm
    async with running(fleet) as (app, pilot, dash):
        assert dash.select_bitmap("vm0", "disk0")
        n = outcomes_seen(dash)
        await pilot.press("n")
        assert isinstance(app.screen, AddBitmapDialog)
        await pilot.press(*"fresh")
        app.screen.query_one("#granularity").value = "4K"
        app.screen.query_one("#disabled").value = True
        await pilot.press("enter")
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
        bm = bitmap(fleet, "disk0", "fresh")
        assert bm.granularity == 4096 and bm.state is BitmapState.DISABLED
        await settle(pilot, dash)
        assert dash.nodes_table.select_key("vm0\x1fdisk0\x1fb:fresh")
    assert sent_commands(audit) == ["block-dirty-bitmap-add"]


async def test_the_add_dialog_opens_empty_for_the_next_node(vm):
    """The add dialog is composed once and reused: nothing typed at one opening reaches the
    next, and the next one is about the node selected then."""
    sb, fleet, audit = vm
    async with running(fleet) as (app, pilot, dash):
        assert dash.select_bitmap("vm0", "disk0")
        await pilot.press("n")
        first = app.screen
        assert isinstance(first, AddBitmapDialog)
        await pilot.press(*"bm0")  # exists on disk0: refused, with a reason
        first.query_one("#granularity").value = "lots"
        first.query_one("#persistent").value = True
        await pilot.pause()
        assert str(first.query_one("#reason").render())
        await pilot.press("escape")
        await settle(pilot, dash)
        assert dash.select_bitmap("vm0", "disk1")
        n = outcomes_seen(dash)
        await pilot.press("n")
        dialog = app.screen
        assert dialog is first
        assert dialog.query_one("#dialog-box").border_title == "New bitmap on disk1"
        assert dialog.query_one("#name").value == "" and dialog.query_one("#name").has_focus
        assert dialog.query_one("#granularity").value == ""
        assert dialog.query_one("#persistent").value is False
        assert str(dialog.query_one("#reason").render()) == ""
        await pilot.press(*"bm0", "enter")  # free on disk1
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
        assert bitmap(fleet, "disk1", "bm0").persistent is False
    assert sent_commands(audit) == ["block-dirty-bitmap-add"]


@pytest.mark.parametrize(
    ("name", "granularity", "reason"),
    [
        ("", "", "cannot be empty"),
        ("bm0", "", "already exists on disk0"),
        ("new", "1000", "not a power of two"),
        ("new", "256", "outside"),
        ("new", "4G", "outside"),
        ("new", "lots", "not a size"),
    ],
)
async def test_add_refusals_are_shown_and_nothing_is_sent(vm, name, granularity, reason):
    sb, fleet, audit = vm
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        await pilot.press("n")
        dialog = app.screen
        assert isinstance(dialog, AddBitmapDialog)
        if name:
            await pilot.press(*name)
        dialog.query_one("#granularity").value = granularity
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog, "a refused request must keep the dialog open"
        shown = str(dialog.query_one("#reason").render())
        assert reason in shown
        await pilot.press("escape")
    assert sent_commands(audit) == []
    assert {b.name for b in fleet.store.connection("vm0").nodes["disk0"].bitmaps} == {"bm0"}


async def test_persistent_on_raw_warns_and_shows_qemu_error(vm, tmp_path):
    sb, fleet, audit = vm
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * (1 << 20))
    await sb.qmp("blockdev-add", {"driver": "raw", "node-name": "rawnode",
                                   "file": {"driver": "file", "filename": str(raw)}})
    await fleet["vm0"].refresh()
    async with running(fleet) as (app, pilot, dash):
        assert dash.select_bitmap("vm0", "rawnode")
        n = outcomes_seen(dash)
        await pilot.press("n")
        dialog = app.screen
        await pilot.press(*"keep")
        dialog.query_one("#persistent").value = True
        await pilot.pause()
        assert "only qcow2" in str(dialog.query_one("#reason").render())
        await pilot.press("enter")
        out = await outcome(pilot, dash, n)
    assert not out.ok and out.sent and out.warning and "qcow2" in out.warning
    # QEMU's own text, unchanged.
    assert out.message == "Can't store persistent bitmaps to rawnode: Operation not supported"
    assert out.error_class == "GenericError"
    assert bitmap(fleet, "rawnode", "keep") is None


async def test_clear_asks_names_bitmap_and_node_then_count_is_zero(vm):
    sb, fleet, audit = vm
    assert bitmap(fleet, "disk0", "bm0").count == 1 << 20
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        assert "'bm0'" in app.screen.question and "disk0" in app.screen.question
        await pilot.press("enter")  # Cancel has the focus: a stray Enter does nothing harmful
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        assert sent_commands(audit) == []
        assert bitmap(fleet, "disk0", "bm0").count == 1 << 20
        n = outcomes_seen(dash)
        await pilot.press("x")
        await pilot.press("y")
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
        assert bitmap(fleet, "disk0", "bm0").count == 0
        await settle(pilot, dash)
        row = dash.nodes_table.get_row("vm0\x1fdisk0\x1fb:bm0")
        assert str(row[2]) == "0 B"
    assert sent_commands(audit) == ["block-dirty-bitmap-clear"]


async def test_disable_enable_and_remove(vm):
    sb, fleet, audit = vm
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        n = outcomes_seen(dash)
        await pilot.press("d")
        await outcome(pilot, dash, n)
        assert bitmap(fleet, "disk0", "bm0").state is BitmapState.DISABLED
        await settle(pilot, dash)
        assert str(dash.nodes_table.get_row("vm0\x1fdisk0\x1fb:bm0")[1]) == "disabled"
        n = outcomes_seen(dash)
        await pilot.press("e")
        await outcome(pilot, dash, n)
        assert bitmap(fleet, "disk0", "bm0").state is BitmapState.ACTIVE
        n = outcomes_seen(dash)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmDialog) and "Remove bitmap 'bm0'" in app.screen.question
        await pilot.click("#confirm")
        await outcome(pilot, dash, n)
        assert bitmap(fleet, "disk0", "bm0") is None
        await settle(pilot, dash)
        assert "vm0\x1fdisk0\x1fb:bm0" not in dash.nodes_table.rows
    assert sent_commands(audit) == [
        "block-dirty-bitmap-disable", "block-dirty-bitmap-enable", "block-dirty-bitmap-remove"]


async def test_merge_from_another_node_confirmed(vm):
    sb, fleet, audit = vm
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        await pilot.press("m")
        dialog = app.screen
        assert isinstance(dialog, MergeDialog)
        await pilot.click("#ok")  # nothing picked: refused, nothing sent
        assert "at least one source" in str(dialog.query_one("#reason").render())
        assert sent_commands(audit) == []
        sources = dialog.query_one("#sources")
        sources.select("disk1/other")
        n = outcomes_seen(dash)
        # (a second click within 0.2 s is swallowed by Button's press animation)
        dialog.query_one("#ok").press()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog), str(dialog.query_one("#reason").render())
        assert "disk1/other" in app.screen.question and "'bm0' on node disk0" in app.screen.question
        await pilot.press("y")
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
    # 1 MiB of its own plus 2 MiB from disk1's bitmap
    assert bitmap(fleet, "disk0", "bm0").count == 3 << 20
    assert sent_commands(audit) == ["block-dirty-bitmap-merge"]


async def test_frozen_bitmap_refuses_everything_without_sending(vm):
    sb, fleet, audit = vm
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 << 20})
    await fleet["vm0"].execute("blockdev-backup", {
        "job-id": "j0", "device": "disk0", "target": "tgt", "sync": "incremental",
        "bitmap": "bm0", "speed": 4096, "auto-finalize": False})
    before = sent_commands(audit)
    assert bitmap(fleet, "disk0", "bm0").state is BitmapState.FROZEN
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        for key in ("x", "e", "d", "m", "r"):
            n = outcomes_seen(dash)
            await pilot.press(key)
            out = await outcome(pilot, dash, n)
            assert not out.ok and not out.sent and "frozen" in out.message, key
            assert app.screen is dash, f"{key}: no dialog for a refused action"
        await settle(pilot, dash)
        assert str(dash.nodes_table.get_row("vm0\x1fdisk0\x1fb:bm0")[1]) == "frozen"
    assert sent_commands(audit) == before
    assert bitmap(fleet, "disk0", "bm0").count == 1 << 20


async def test_inconsistent_bitmap_only_remove(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "saved", persistent=True)
    await sb.restart()  # stored cleanly, loaded again: now marked in-use in the image
    sb.kill()  # ...and never stored: inconsistent on the next start
    await sb.start()
    audit = tmp_path / "audit.jsonl"
    fleet = await fleet_for(sb, audit=AuditLog(audit))
    assert bitmap(fleet, "disk0", "saved").state is BitmapState.INCONSISTENT
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "saved")
        for key in ("x", "e", "d", "m"):
            n = outcomes_seen(dash)
            await pilot.press(key)
            out = await outcome(pilot, dash, n)
            assert not out.ok and not out.sent and "only be removed" in out.message, key
        await settle(pilot, dash)
        assert str(dash.nodes_table.get_row("vm0\x1fdisk0\x1fb:saved")[1]) == "inconsistent"
        n = outcomes_seen(dash)
        await pilot.press("r")
        await pilot.press("y")
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
    assert bitmap(fleet, "disk0", "saved") is None
    assert sent_commands(audit) == ["block-dirty-bitmap-remove"]


async def test_anonymous_rows_refuse_and_can_be_hidden(vm):
    sb, fleet, audit = vm
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 << 20})
    await fleet["vm0"].execute("blockdev-backup", {
        "job-id": "j0", "device": "disk0", "target": "tgt", "sync": "incremental",
        "bitmap": "bm0", "speed": 4096, "auto-finalize": False})
    async with running(fleet) as (app, pilot, dash):
        await settle(pilot, dash)
        anon = [k.value for k in dash.nodes_table.rows if "\x1fa:" in str(k.value)]
        assert anon, "a backup adds anonymous bitmaps"
        assert "(anonymous)" in str(dash.nodes_table.get_row(anon[0])[0])
        dash.nodes_table.select_key(anon[0])
        n = outcomes_seen(dash)
        await pilot.press("x")
        out = await outcome(pilot, dash, n)
        assert not out.ok and "anonymous" in out.message
        await pilot.press("i")
        await settle(pilot, dash)
        assert not [k for k in dash.nodes_table.rows if "\x1fa:" in str(k.value)]


async def test_policy_bitmaps_are_told_apart_at_80_columns(sandbox, fleet_for):
    """Chains of one ledger share the ``bt.<ledger id>.`` prefix: the row shows the policy and
    the chain, which fit the name column; the full name stays in the row's key."""
    names = ("bt.a836cfe9.nightly.c1", "bt.a836cfe9.nightly.c2", "bt.a836cfe9.hourly.c1")
    for name in names:
        await sandbox.add_bitmap(0, name)
    fleet = await fleet_for(sandbox)
    async with running(fleet) as (_app, _pilot, dash):
        shown = [str(dash.nodes_table.get_row(f"vm0\x1fdisk0\x1fb:{n}")[0]) for n in names]
        # in the order of `names`; sorted by full name, nightly·c2 is the node's last row
        assert shown == [" ├ nightly·c1", " └ nightly·c2", " ├ hourly·c1"]
        width = dict((k, w) for k, _, w in FIXED_COLUMNS)["name"]
        assert all(len(s) <= width for s in shown)
        assert dash.select_bitmap("vm0", "disk0", names[1])
        assert dash.nodes_table.selection.bitmap == names[1]
