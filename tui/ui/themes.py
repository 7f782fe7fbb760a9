"""Themes: YAML files validated and turned into :class:`textual.theme.Theme`.

The built-in themes are the repository's top-level ``themes/*.yaml``; the package reaches them
through the ``tui/ui/builtin_themes`` symlink, which setuptools follows when it copies package data
into a wheel, so they are found the same way from a source checkout, an editable install and an
installed wheel. User themes come from
``$XDG_CONFIG_HOME/bitmap-tui/themes/*.yaml``; a broken user theme is reported once and skipped.

Every state the app colours (bitmap, job, link, image, event states) is an app variable that
every theme defines, so the stylesheets use ``$bitmap-frozen`` and never a literal colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme
from yaml.nodes import Node

from tui.core.base.errors import ConfigError
from tui.core.base.paths import user_themes_dir
from tui.core.base.yamlnodes import Reader, load_nodes

BUILTIN_DIR = Path(__file__).parent / "builtin_themes"
BUILTIN_NAMES = ("dark", "light", "high-contrast", "ansi")
DEFAULT_THEME = "dark"

# App variables every theme defines (used by the .tcss files as $name).
STATE_VARIABLES = (
    "bitmap-active",
    "bitmap-disabled",
    "bitmap-frozen",
    "bitmap-inconsistent",
    "job-running",
    "job-paused",
    "job-ready",
    "job-pending",
    "job-waiting",
    "job-completed",
    "job-failed",
    "job-cancelled",
    "job-lost",
    "link-connected",
    "link-connecting",
    "link-disconnected",
    "link-failed",
    "image-valid",
    "image-pending",
    "image-invalid",
    "event-error",
    "event-warning",
    "event-info",
)
BASE_COLORS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "warning",
    "error",
    "success",
)
THEME_KEYS = {"name", "dark", "ansi", "inherits", "colors", "variables"}


@dataclass(frozen=True, slots=True)
class ThemeSpec:
    """A validated theme file, before it becomes a Textual Theme."""

    name: str
    dark: bool
    ansi: bool
    colors: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def to_theme(self) -> Theme:
        c = self.colors
        return Theme(
            name=self.name,
            primary=c["primary"],
            secondary=c.get("secondary"),
            accent=c.get("accent"),
            foreground=c.get("foreground"),
            background=c.get("background"),
            surface=c.get("surface"),
            panel=c.get("panel"),
            boost=c.get("boost"),
            warning=c.get("warning"),
            error=c.get("error"),
            success=c.get("success"),
            dark=self.dark,
            ansi=self.ansi,
            variables=dict(self.variables),
        )


def _color(r: Reader, node: Node, key: str) -> str:
    text = r.string(node, key).strip()
    try:
        Color.parse(text)
    except ColorParseError:
        r.fail(node, key, f"'{text}' is not a colour (use #rrggbb, a colour name or ansi_red ...)")
    return text


def parse_theme(path: Path, bases: dict[str, ThemeSpec] | None = None) -> ThemeSpec:
    """Read and validate one theme file. ``bases`` are the themes ``inherits:`` may name.

    A theme that inherits takes every colour and variable it does not set from its base (by
    default the built-in ``dark`` or ``light`` theme, following its ``dark:`` flag), so a user
    theme can be three lines long and still define every state colour.
    """
    node, r = load_nodes(path, "theme")
    if node is None:
        raise ConfigError(f"{path}: empty theme file")
    m = r.mapping(node, "", THEME_KEYS, ("name",))
    name = r.string(m["name"][1], "name")
    if not all(ch.isalnum() or ch in "-_" for ch in name):
        r.fail(m["name"][1], "name", "a theme name uses letters, digits, '-' and '_'")
    dark = r.boolean(m["dark"][1], "dark") if "dark" in m else True
    ansi = r.boolean(m["ansi"][1], "ansi") if "ansi" in m else False
    base: ThemeSpec | None = None
    if bases is not None:
        if "inherits" in m:
            inode = m["inherits"][1]
            base_name = r.string(inode, "inherits")
            if base_name not in bases:
                r.fail(inode, "inherits", f"no theme named '{base_name}' (known: {', '.join(bases)})")
            base = bases[base_name]
        else:
            base = bases.get(DEFAULT_THEME if dark else "light")
    elif "inherits" in m:
        r.fail(m["inherits"][0], "inherits", "built-in themes define everything themselves")
    colors: dict[str, str] = dict(base.colors) if base else {}
    if "colors" in m:
        for k, (_kn, vn) in r.mapping(m["colors"][1], "colors", set(BASE_COLORS), (), m["colors"][0]).items():
            colors[k] = _color(r, vn, f"colors.{k}")
    if "primary" not in colors:
        r.fail(m["colors"][0] if "colors" in m else node, "colors", "missing required key 'primary'")
    variables: dict[str, str] = dict(base.variables) if base else {}
    if "variables" in m:
        for k, (_kn, vn) in r.mapping(m["variables"][1], "variables", None, (), m["variables"][0]).items():
            variables[k] = _color(r, vn, f"variables.{k}")
    if ansi:
        # Textual's stylesheets use these two whenever a theme is ANSI.
        variables.setdefault("ansi-background", "ansi_default")
        variables.setdefault("ansi-foreground", "ansi_default")
    missing = [v for v in STATE_VARIABLES if v not in variables]
    if missing:
        where = m["variables"][0] if "variables" in m else node
        r.fail(where, "variables", f"missing state colour(s): {', '.join(missing)}")
    return ThemeSpec(name, dark, ansi, colors, variables, path)


@dataclass
class ThemeSet:
    """The themes available to the app, and the one-line problems found while loading them."""

    themes: dict[str, Theme] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, name: str) -> Theme:
        try:
            return self.themes[name]
        except KeyError:
            raise ConfigError(
                f"unknown theme '{name}' (available: {', '.join(self.themes)})"
            ) from None


#: Rich's names for terminals with only the 16 ANSI colours.
SIXTEEN_COLOURS = frozenset({"standard", "windows"})
ANSI_THEME = "ansi"


def theme_for_terminal(name: str, color_system: str | None, themes: Mapping[str, Theme]) -> str:
    """The theme to use: ``name``, except on a 16-colour terminal, where a true-colour theme's
    shades collapse into the same few colours (``disabled`` reads as body text) and the ANSI
    theme (the terminal's own 16 colours, chosen to stay apart) is used instead."""
    theme = themes.get(name)
    if color_system in SIXTEEN_COLOURS and theme is not None and not theme.ansi \
            and ANSI_THEME in themes:
        return ANSI_THEME
    return name


def adapt_to_terminal(app: Any) -> str:
    """Switch ``app`` to the theme its terminal can show (see :func:`theme_for_terminal`); the
    theme now in use. The console calls it once before it starts (tests keep their theme)."""
    chosen = theme_for_terminal(app.theme, app.console.color_system, app.available_themes)
    if chosen != app.theme:
        app.theme = chosen
    return str(app.theme)


def builtin_specs() -> dict[str, ThemeSpec]:
    """The shipped themes; a broken one is a packaging bug, so it raises."""
    specs = {}
    for name in BUILTIN_NAMES:
        spec = parse_theme(BUILTIN_DIR / f"{name}.yaml")
        if spec.name != name:
            raise ConfigError(f"{spec.path}: theme name '{spec.name}' should be '{name}'")
        specs[name] = spec
    return specs


def load_themes(user_dir: Path | None = None) -> ThemeSet:
    """Built-in themes plus the user's (``user_dir``, default the XDG config's ``themes/``).

    A user theme with a built-in's name replaces it. A broken user theme adds one line to
    ``problems`` and is skipped; the rest load.
    """
    specs = builtin_specs()
    out = ThemeSet({n: s.to_theme() for n, s in specs.items()})
    directory = user_themes_dir() if user_dir is None else user_dir
    if directory.is_dir():
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            try:
                spec = parse_theme(path, specs)
                out.themes[spec.name] = spec.to_theme()
            except ConfigError as exc:
                out.problems.append(f"theme skipped: {exc}")
    return out


def register_themes(app: Any, themes: ThemeSet) -> None:
    """Register every theme with a Textual App (Textual's own stay available too).

    Call it from the App's ``__init__`` and set ``app.theme`` there: the stylesheet is first
    parsed with the theme current at start.
    """
    for theme in themes.themes.values():
        app.register_theme(theme)
