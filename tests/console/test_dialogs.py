"""Dialogs show names exactly as typed and never confirm by accident."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Static

from tui.ui.screens.dialogs import ConfirmDialog


async def test_confirm_dialog_shows_markup_characters_literally_and_enter_cancels():
    answers: list[bool | None] = []
    app: App[None] = App()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ConfirmDialog("Clear bitmap", "Clear bitmap 'nightly[b]x[/b]' on disk0?",
                                      "Clear"), answers.append)
        await pilot.pause()
        text = str(app.screen.query_one("#question", Static).render())
        assert "nightly[b]x[/b]" in text
        await pilot.press("enter")  # Cancel has the focus
        await pilot.pause()
    assert answers == [False]


async def test_checkbox_state_is_in_its_text():
    from textual.app import App, ComposeResult

    from tui.ui.widgets.checkbox import TextCheckbox

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield TextCheckbox("persistent", id="c")

    app = One()
    async with app.run_test(size=(40, 3)) as pilot:
        box = app.query_one("#c", TextCheckbox)
        assert "[ ]" in str(box.render()) and "[x]" not in str(box.render())
        box.focus()
        await pilot.press("space")
        await pilot.pause()
        assert box.value and "[x]" in str(box.render())
