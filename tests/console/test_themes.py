"""Themes: each shipped theme loads, defines every state colour, and works in a stylesheet."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.color import Color
from textual.theme import Theme
from textual.widgets import Static

from tests.kit.common import ROOT
from tui.core.base.errors import ConfigError
from tui.ui.theme_vars import APP_VARIABLES, resolve_defaults
from tui.ui.themes import (
    BUILTIN_DIR,
    BUILTIN_NAMES,
    STATE_VARIABLES,
    builtin_specs,
    load_themes,
    parse_theme,
    register_themes,
)


def test_repository_themes_dir_is_the_shipped_one():
    # `themes/` at the top of a checkout is what the package ships (tui/ui/builtin_themes).
    assert (ROOT / "themes").resolve() == BUILTIN_DIR.resolve()
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == sorted(BUILTIN_NAMES)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_theme_loads_with_every_state_colour(name):
    spec = parse_theme(BUILTIN_DIR / f"{name}.yaml")
    assert spec.name == name
    assert set(STATE_VARIABLES) <= set(spec.variables)
    theme = spec.to_theme()
    assert isinstance(theme, Theme) and theme.name == name
    # what App.get_css_variables() does with a theme
    generated = {**theme.to_color_system().generate(), **theme.variables}
    for var in STATE_VARIABLES:
        assert Color.parse(generated[var]) == Color.parse(spec.variables[var])
    # the state colours of one theme are not all the same colour
    assert len({spec.variables[v] for v in STATE_VARIABLES}) >= 4
    assert (BUILTIN_DIR / f"{name}.yaml").read_text().startswith("#")


def test_ansi_theme_uses_only_the_terminal_palette():
    spec = builtin_specs()["ansi"]
    assert spec.ansi
    for value in [*spec.colors.values(), *spec.variables.values()]:
        assert value.startswith("ansi_"), value
        assert Color.parse(value).ansi is not None


def test_light_is_light_and_others_dark():
    specs = builtin_specs()
    assert not specs["light"].dark and specs["dark"].dark and specs["high-contrast"].dark


class Probe(App[None]):
    """A tiny app whose CSS uses the state variables: fails to start if a theme lacks one."""

    CSS = "\n".join(
        f"#{v} {{ color: ${v}; }}" for v in STATE_VARIABLES
    )

    def __init__(self, choice: str) -> None:
        super().__init__()
        themes = load_themes(Path("/nonexistent"))
        register_themes(self, themes)
        self.theme = themes.get(choice).name

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # as the app does: defaults from the current theme for themes that lack our variables
        return resolve_defaults(self.current_theme.to_color_system().generate())

    def compose(self) -> ComposeResult:
        for v in STATE_VARIABLES:
            yield Static(v, id=v)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
async def test_theme_applies_state_colours_in_css(name):
    app = Probe(name)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == name
        spec = builtin_specs()[name]
        w = app.query_one("#bitmap-frozen", Static)
        want = Color.parse(spec.variables["bitmap-frozen"])
        got = w.styles.color
        if spec.ansi:
            assert got.ansi == want.ansi
        else:
            assert got.rgb == want.rgb


async def test_switching_to_a_textual_theme_keeps_state_colours():
    """The palette's theme switcher also offers Textual's own themes: they get our defaults."""
    app = Probe("dark")
    async with app.run_test(size=(80, 24)) as pilot:
        app.theme = "nord"
        await pilot.pause()
        assert app.theme == "nord"
        want = Color.parse(app.current_theme.to_color_system().generate()["error"])
        assert app.query_one("#bitmap-inconsistent", Static).styles.color.rgb == want.rgb
        app.theme = "light"
        await pilot.pause()
        got = app.query_one("#bitmap-inconsistent", Static).styles.color
        assert got.rgb == Color.parse(builtin_specs()["light"].variables["bitmap-inconsistent"]).rgb


def test_every_state_colour_has_a_default_for_other_themes():
    # Textual's own themes (offered by the palette) do not define our variables.
    assert set(STATE_VARIABLES) <= set(APP_VARIABLES)


def test_unknown_theme_choice_is_one_line_error():
    with pytest.raises(ConfigError, match=r"unknown theme 'solarised' \(available: dark, light"):
        load_themes(Path("/nonexistent")).get("solarised")


def test_user_themes_inherit_and_broken_ones_are_skipped_once(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "# my theme\nname: mine\ninherits: high-contrast\ncolors:\n  primary: '#ff00ff'\n"
        "variables:\n  bitmap-frozen: '#123456'\n"
    )
    (tmp_path / "pale.yaml").write_text("name: pale\ndark: false\n")
    (tmp_path / "broken.yaml").write_text("name: broken\ncolors:\n  primary: notacolour\n")
    (tmp_path / "typo.yaml").write_text("name: typo\nvariabls: {}\n")
    (tmp_path / "garbage.yaml").write_text("name: [unclosed\n")
    themes = load_themes(tmp_path)
    assert {"mine", "pale"} <= set(themes.themes)
    assert not {"broken", "typo"} & set(themes.themes)
    assert len(themes.problems) == 3  # one line per broken file, no more
    text = "\n".join(themes.problems)
    assert f"{tmp_path / 'broken.yaml'}:3: colors.primary: 'notacolour' is not a colour" in text
    assert f"{tmp_path / 'typo.yaml'}:2: variabls: unknown key (did you mean 'variables'?)" in text
    assert f"{tmp_path / 'garbage.yaml'}:" in text and "not valid YAML" in text
    mine = themes.themes["mine"].variables
    hc = builtin_specs()["high-contrast"]
    assert Color.parse(mine["bitmap-frozen"]) == Color.parse("#123456")
    assert Color.parse(mine["bitmap-active"]) == Color.parse(hc.variables["bitmap-active"])
    pale = themes.themes["pale"]
    assert pale.dark is False
    assert pale.variables["bitmap-active"] == builtin_specs()["light"].variables["bitmap-active"]


def test_user_theme_errors(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\ninherits: neon\n")
    with pytest.raises(ConfigError, match=r"t.yaml:2: inherits: no theme named 'neon'"):
        parse_theme(p, builtin_specs())
    p.write_text("name: t\ncolors:\n  primary: '#fff'\n")
    with pytest.raises(ConfigError, match=r"t.yaml:1: variables: missing state colour\(s\): bitmap-active"):
        parse_theme(p)  # no base to inherit from: every state colour is needed


def test_user_dir_defaults_to_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "bitmap-tui" / "themes"
    d.mkdir(parents=True)
    (d / "x.yaml").write_text("name: x\n")
    assert "x" in load_themes().themes


# xterm's default 16-colour palette: the reference for the ANSI theme (whose real shades are the
# terminal's), on xterm's default black background.
XTERM_16 = {
    "black": "#000000", "red": "#cd0000", "green": "#00cd00", "yellow": "#cdcd00",
    "blue": "#0000ee", "magenta": "#cd00cd", "cyan": "#00cdcd", "white": "#e5e5e5",
    "bright_black": "#7f7f7f", "bright_red": "#ff0000", "bright_green": "#00ff00",
    "bright_yellow": "#ffff00", "bright_blue": "#5c5cff", "bright_magenta": "#ff00ff",
    "bright_cyan": "#00ffff", "bright_white": "#ffffff",
}
XTERM_DEFAULT_BACKGROUND = "#000000"


def _rgb(value: str) -> Color:
    if value.startswith("ansi_"):
        name = value.removeprefix("ansi_")
        return Color.parse(XTERM_16[name] if name != "default" else XTERM_DEFAULT_BACKGROUND)
    return Color.parse(value)


def _luminance(c: Color) -> float:
    def channel(v: int) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b)


def contrast(a: Color, b: Color) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_of_black_on_white_is_21():
    assert round(contrast(Color.parse("#000000"), Color.parse("#ffffff")), 1) == 21.0
    assert round(contrast(Color.parse("#777777"), Color.parse("#ffffff")), 2) == 4.48


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_state_colour_reads_at_4_5_to_1_on_its_backgrounds(name):
    spec = parse_theme(BUILTIN_DIR / f"{name}.yaml")
    theme = spec.to_theme()
    generated = {**theme.to_color_system().generate(), **theme.variables}
    for where in ("background", "surface"):
        value = spec.colors.get(where) or generated[where]
        bg = _rgb(value if value != "ansi_default" else "ansi_default")
        low = {var: round(contrast(_rgb(spec.variables[var]), bg), 2)
               for var in STATE_VARIABLES if contrast(_rgb(spec.variables[var]), bg) < 4.5}
        assert not low, f"{name} on {where} ({value}): {low}"


def test_a_16_colour_terminal_gets_the_ansi_theme(monkeypatch):
    """With 16 colours the dark theme's greys collapse into the body colour: the ANSI theme's
    colours stay apart. A 256-colour or true-colour terminal keeps the chosen theme."""
    from tui.ui.app import BitmapTuiApp
    from tui.ui.themes import adapt_to_terminal, theme_for_terminal

    app = BitmapTuiApp()
    themes = app.available_themes
    assert theme_for_terminal("dark", "standard", themes) == "ansi"
    assert theme_for_terminal("light", "windows", themes) == "ansi"
    assert theme_for_terminal("dark", "256", themes) == "dark"
    assert theme_for_terminal("dark", "truecolor", themes) == "dark"
    assert theme_for_terminal("ansi", "standard", themes) == "ansi"
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    app16 = BitmapTuiApp(theme_name="dark")
    assert app16.console.color_system == "standard" and app16.theme == "dark"
    assert adapt_to_terminal(app16) == "ansi" and app16.theme == "ansi"
    monkeypatch.setenv("COLORTERM", "truecolor")
    app24 = BitmapTuiApp(theme_name="dark")
    assert adapt_to_terminal(app24) == "dark"
