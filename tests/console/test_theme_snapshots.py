"""The dashboard at 80x24 with each theme and with each sample config applied (theme, read-only,
keymap), from the deterministic fake state."""

from __future__ import annotations

import pytest

from tests.kit.common import ROOT
from tests.kit.fake_state import build_store
from tui.core.config import load_config
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp, known_binding_ids
from tui.ui.themes import BUILTIN_NAMES

SAMPLES = sorted((ROOT / "sample-configs").glob("config-*.yaml"))


# Snapshots show event timestamps: render them in UTC whatever the machine's zone.
pytestmark = pytest.mark.usefixtures("utc")


@pytest.mark.parametrize("theme", BUILTIN_NAMES)
def test_dashboard_with_theme(snap_compare, theme):
    app = BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0, theme_name=theme)
    assert snap_compare(app, terminal_size=(80, 24))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_dashboard_with_sample_config(snap_compare, path):
    cfg = load_config(path)
    cfg.check_keymap(known_binding_ids())
    app = BitmapTuiApp(ConsoleContext(store=build_store(), read_only=cfg.defaults.read_only),
                       clock=lambda: 1000.0, theme_name=cfg.defaults.theme, keymap=cfg.keymap)
    assert snap_compare(app, terminal_size=(80, 24))


async def test_theme_and_keymap_are_applied():
    cfg = load_config(ROOT / "sample-configs" / "config-keys.yaml")
    app = BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0, theme_name=cfg.defaults.theme,
                       keymap=cfg.keymap)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "ansi" and app.current_theme.ansi
        # the remapped quit key works; the help key too
        await pilot.press("f1")
        await pilot.pause()
        from tui.ui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code in (0, None) and not app.is_running


async def test_palette_theme_switch_offers_our_themes():
    app = BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "dark"
        assert set(BUILTIN_NAMES) <= set(app.available_themes)
        await pilot.press("ctrl+p")
        await pilot.pause()
        for ch in "theme":
            await pilot.press(ch)
        await pilot.pause()
        await pilot.press("enter")  # "Theme" / "Change theme": opens the theme list
        await pilot.pause()
        for ch in "high-contrast":
            await pilot.press(ch)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "high-contrast"


def test_unknown_theme_or_keymap_id_stops_before_start(tmp_path, capsys):
    from tui.cli.main import main

    assert main(["--theme", "neon", "--connect", "unix:/nonexistent.sock"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitmap-tui: unknown theme 'neon' (available: dark, light, high-contrast, ansi")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("keymap:\n  bitmap.clearr: X\n")
    assert main(["--config", str(cfg), "--connect", "unix:/nonexistent.sock"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bitmap-tui: {cfg}:2: keymap.bitmap.clearr: no key binding has this id "
                          "(did you mean 'bitmap.clear'?)")


async def test_broken_user_theme_is_reported_once_and_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "bitmap-tui" / "themes"
    d.mkdir(parents=True)
    (d / "bad.yaml").write_text("name: bad\ncolors:\n  primary: nope\n")
    (d / "good.yaml").write_text("name: good\ninherits: light\n")
    app = BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0, theme_name="good")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == "good" and "bad" not in app.available_themes
        messages = [n.message for n in app._notifications]
        skipped = [m for m in messages if "theme skipped" in m]
        assert len(skipped) == 1 and "bad.yaml:3: colors.primary" in skipped[0]
        app.theme = "dark"
        await pilot.pause()
        assert len([n for n in app._notifications if "theme skipped" in n.message]) == 1
