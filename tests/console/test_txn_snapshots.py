"""Composer snapshots at 80x24 on a fixed state (no QEMU: the state is built in a Store)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual.app import App

from tests.kit.fake_state import store_only
from tui.core.txn import loads
from tui.ui.screens.composer import ComposerScreen

DOC = """
actions:
  - {type: drive-backup, data: {device: drive0, bitmap: bitmap0, format: qcow2, mode: existing,
     sync: incremental, target: /backups/d0-incr-1.qcow2}}
  - {type: drive-backup, data: {device: drive1, bitmap: bitmap1, format: qcow2, mode: existing,
     sync: incremental, target: /backups/d1-incr-1.qcow2}}
"""


class SnapApp(App[None]):
    def on_mount(self) -> None:
        self.push_screen(ComposerScreen(store_only(), "vm0", loads(DOC)))


def test_composer_form_80x24(snap_compare: Any) -> None:
    assert snap_compare(SnapApp(), terminal_size=(80, 24))


def test_composer_whatif_grouped_80x24(snap_compare: Any) -> None:
    assert snap_compare(SnapApp(), terminal_size=(80, 24), press=["m", "4"])


def test_incremental_of_the_selected_drives() -> None:
    """The dashboard's "incremental backup of these": one blockdev-backup per drive with its
    bitmap, to a target created when sent."""
    screen = ComposerScreen.for_incremental(store_only(), "vm0", ["drive0", "drive1"],
                                            "/b/{device}-incr-{n}.qcow2")
    dflt = ComposerScreen.for_incremental(store_only(), "vm0", ["drive1"])
    assert [t.path for t in dflt.targets] == ["/images/drive1-incr-1.qcow2"]
    txn = screen.txn
    assert txn.completion_mode == "grouped"
    assert [(a.type, a.data["device"], a.data["bitmap"], a.data["target"], a.data["sync"])
            for a in txn.actions] == [
        ("blockdev-backup", "disk0", "bitmap0", "drive0-incr-1", "incremental"),
        ("blockdev-backup", "disk1", "bitmap1", "drive1-incr-1", "incremental")]
    assert [t.path for t in screen.targets] == ["/b/drive0-incr-1.qcow2", "/b/drive1-incr-1.qcow2"]


async def test_screen_keys_work_from_a_field_enter_goes_in_esc_comes_out() -> None:
    app = SnapApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        actions = screen.query_one("#actions")
        actions.focus()
        await pilot.press("enter")  # into the action's form
        await pilot.pause()
        form = screen.query_one("#form")
        assert app.focused is not None and form in app.focused.ancestors
        await pilot.press("f2")  # mode, although a field has the focus
        await pilot.pause()
        assert screen.txn.completion_mode == "grouped"
        await pilot.press("escape")  # out of the field, nothing discarded
        await pilot.pause()
        assert app.screen is screen and app.focused is actions
        assert len(screen.txn.actions) == 2
        await pilot.press("enter", "f6")  # next panel, from a field
        await pilot.pause()
        assert screen.query_one("#right").active == "tab-json"


async def test_esc_on_the_fix_dialog_changes_nothing() -> None:
    from tui.ui.screens.dialogs import ConfirmDialog

    app = SnapApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        before = screen.txn
        screen.query_one("#actions").focus()
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and screen.txn == before
        await pilot.press("f", "n")  # n: only replace the action (no QEMU needed)
        await pilot.pause()
        await pilot.pause()
        assert screen.txn.actions[0].type == "blockdev-backup"


async def test_leaving_with_unsent_changes_asks_and_hands_back_a_draft() -> None:
    from tui.ui.screens.composer import Draft
    from tui.ui.screens.dialogs import ConfirmDialog

    results: list[Any] = []

    class Host(App[None]):
        def on_mount(self) -> None:
            plan = ComposerScreen.for_incremental(store_only(), "vm0", ["drive0"])
            self.push_screen(plan, results.append)

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen) and screen.unsent
        screen.query_one("#actions").focus()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await pilot.pause()
        assert len(results) == 1 and isinstance(results[0], Draft)
        assert results[0].transaction == screen.txn and results[0].targets == screen.targets


async def test_read_only_hides_and_refuses_send() -> None:
    fleet = replace(store_only(), read_only=True)

    class RO(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ComposerScreen(fleet, "vm0", loads(DOC)))

    app = RO()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        assert screen.check_action("send", ()) is False
        await pilot.press("s")
        await pilot.pause()
        assert app.screen is screen and screen.run is None  # no confirmation, nothing sent
        assert screen.check_action("toggle_mode", ()) is True

    # the console's help on the composer hides the keys that would send
    from tui.ui.app import BitmapTuiApp

    app2 = BitmapTuiApp(fleet)
    async with app2.run_test(size=(80, 24)) as pilot:
        await app2.push_screen(ComposerScreen(fleet, "vm0", loads(DOC)))
        await pilot.pause()
        keys = dict(dict(app2.key_help())["Transaction composer"])
        assert "m" in keys and "s" not in keys and "f" not in keys


async def test_save_asks_for_a_file_and_writes_loadable_yaml(tmp_path: Any) -> None:
    from tui.core.txn import load
    from tui.ui.screens.txn_dialogs import AskDialog

    target = tmp_path / "saved.yaml"
    app = SnapApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        await pilot.press("m", "ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, AskDialog)
        app.screen.query_one("#value").value = str(tmp_path / "no-such-dir" / "x.yaml")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.path is None and not (tmp_path / "no-such-dir").exists()  # one line, kept
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#value").value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        assert load(target) == screen.txn and screen.txn.completion_mode == "grouped"


async def test_targets_on_a_remote_qemu_ask_before_sending() -> None:
    from tui.ui.screens.dialogs import ConfirmDialog

    fleet = store_only()
    fleet.store.update("vm0", lambda c: replace(c, address="tcp:vm0.example:4444"))

    class Remote(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ComposerScreen.for_incremental(fleet, "vm0", ["drive0"]))

    app = Remote()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        screen.query_one("#actions").focus()
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "truncates" in app.screen.question
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and screen.run is None


async def test_quit_with_an_unsent_transaction_asks() -> None:
    from tui.ui.app import BitmapTuiApp
    from tui.ui.screens.dialogs import ConfirmDialog

    fleet = store_only()
    app = BitmapTuiApp(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.push_screen(ComposerScreen.for_incremental(fleet, "vm0", ["drive0"]))
        await pilot.pause()
        app.screen.query_one("#actions").focus()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "vm0" in app.screen.question
        await pilot.press("escape")  # stay: nothing lost
        await pilot.pause()
        assert isinstance(app.screen, ComposerScreen) and app.return_code is None
        await pilot.press("q", "y")
        await pilot.pause()
    assert app.return_code == 0
