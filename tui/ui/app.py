"""The Textual application: setup only. Screens live in ``tui/ui/screens``, widgets in
``tui/ui/widgets``; :mod:`tui.ui.run` starts it on a session's fleet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.core.base.heap import settle_heap
from tui.core.base.text import shown, shown_lines
from tui.core.model.store import Store
from tui.core.qmp.fleet import Fleet
from tui.session import ConsoleContext
from tui.ui.actions import APP, DASHBOARD, UiAction, bindings, help_groups, known_ids, refuses
from tui.ui.actions import group as action_group
from tui.ui.palette import ContextCommands
from tui.ui.roles import action_groups
from tui.ui.screens.dashboard import DashboardScreen
from tui.ui.screens.help import HelpScreen
from tui.ui.theme_vars import resolve_defaults
from tui.ui.themes import DEFAULT_THEME, ThemeSet, load_themes, register_themes


class BitmapTuiApp(App[int]):
    """bitmap-tui on a session's :class:`~tui.session.ConsoleContext` (its fleet may be started
    or not; a context with a bare store only shows)."""

    CSS_PATH = "app.tcss"
    TITLE = "bitmap-tui"
    COMMANDS = App.COMMANDS | {ContextCommands}
    BINDINGS = bindings(APP)

    def __init__(self, context: ConsoleContext | None = None, *,
                 clock: Callable[[], float] = time.monotonic, theme_name: str | None = None,
                 themes: ThemeSet | None = None, keymap: dict[str, str] | None = None,
                 startup: Callable[[BitmapTuiApp], Awaitable[None]] | None = None) -> None:
        super().__init__()
        #: What the session decided: the fleet, the ledger, the policies, read-only, the audit
        #: log, the demo (a bare store when there is no session: tests, screenshots).
        self.context = context if context is not None else ConsoleContext(store=Store())
        # A coroutine run once the app is up (after the fleet started): ``startup(app)``.
        self.startup = startup
        self.clock = clock
        self.theme_name = theme_name
        # Our themes (built-in and the user's) join Textual's, so the palette's theme switcher
        # offers them; chosen here, before the stylesheet is first parsed.
        self.themes = themes if themes is not None else load_themes()
        register_themes(self, self.themes)
        if (theme_name or DEFAULT_THEME) in self.available_themes:
            self.theme = theme_name or DEFAULT_THEME
        # The remapped keys by binding id (the help screen shows these).
        self.keymap_overrides: dict[str, str] = {}
        if keymap:
            self.set_keymap(keymap)

    @property
    def fleet(self) -> Fleet | None:
        return self.context.fleet

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def read_only(self) -> bool:
        return self.context.read_only

    def set_keymap(self, keymap: Mapping[str, str]) -> None:
        """Remap keys by binding id (the config's ``keymap``); the help screen follows."""
        self.keymap_overrides = dict(keymap)
        super().set_keymap(keymap)

    def notify(self, message: str, *, title: str = "", **options: Any) -> None:
        """Every notification, made safe: control characters escaped, long values cut."""
        super().notify("\n".join(shown_lines(message)), title=shown(title), **options)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # $bitmap-frozen and friends default to the current theme's colours; themes may override.
        return resolve_defaults(self.current_theme.to_color_system().generate())

    def get_default_screen(self) -> Screen[Any]:
        return DashboardScreen(self.context, clock=self.clock)

    def on_mount(self) -> None:
        # Everything loaded so far (Textual, the widgets, the config) lives as long as the app:
        # keep it out of the cyclic GC's full collections, whose pauses otherwise grow with
        # the event history and showed as the latency tail under event floods (benchmarks/).
        settle_heap()
        if self.theme_name and self.theme_name not in self.available_themes:
            self.notify(f"unknown theme '{self.theme_name}'", severity="error")
        for problem in self.themes.problems:  # each broken user theme, once
            self.notify(problem, severity="warning", timeout=10)
        if self.fleet is not None:
            self.fleet.start()
            # Once every connection answered, its synced state is long-lived too.
            self.run_worker(self._settle_after_sync(self.fleet), name="settle-heap",
                            exit_on_error=False)
        if self.startup is not None:  # e.g. `bitmap-tui compose` opens the composer
            self.run_worker(self.startup(self), name="startup", exit_on_error=False)

    async def _settle_after_sync(self, fleet: Fleet) -> None:
        with contextlib.suppress(TimeoutError):
            await fleet.wait_first_answer(self.context.first_answer_timeout)
        settle_heap()

    @property
    def dashboard(self) -> DashboardScreen:
        """The dashboard (the default screen), even while dialogs are open above it."""
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                return screen
        raise LookupError("no dashboard screen")

    async def action_dashboard(self, action: str) -> None:
        """Run a dashboard action (the nodes and jobs tables' keys are routed here)."""
        await self.dashboard.run_action(action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Routed table keys: hidden and refused in read-only mode, whatever screen is on top.
        if action == "dashboard" and parameters:
            return not refuses(str(parameters[0]).split("(", 1)[0], self.read_only)
        return True

    def unsent_transactions(self) -> list[str]:
        """Connections with a transaction neither sent nor saved: an open composer's or a
        draft the dashboard keeps."""
        from tui.ui.screens.composer import ComposerScreen

        names = set()
        with contextlib.suppress(LookupError):
            names |= set(self.dashboard.ops.drafts)
        names |= {s.connection for s in self.screen_stack
                  if isinstance(s, ComposerScreen) and s.unsent}
        return sorted(names)

    async def action_quit(self) -> None:
        """Quit; with unsent transactions, ask first (one key must not lose them)."""
        unsent = self.unsent_transactions()
        if not unsent:
            self.exit()
            return
        from tui.ui.screens.dialogs import ConfirmDialog

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmDialog(
            "Quit?", f"The transaction of {', '.join(unsent)} is not sent and would be lost.",
            "Quit", back_label="Stay"), answered)

    def action_chains(self) -> None:
        """Open the backup chains screen (ledger, policies, run policy)."""
        from tui.ui.screens.chains import ChainsScreen

        if isinstance(self.screen, ChainsScreen):
            return
        if self.context.ledger_path is None:
            self.notify("this console has no ledger", severity="error")
            return
        self.push_screen(ChainsScreen(self.context, self.context.ledger_path))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Keys by area from the registry, as remapped by the keymap, without the mutating ones
        if read-only. A screen pushed over the dashboard (the composer, ...) shows its own first."""

        def key_of(a: UiAction) -> str:
            key = self.keymap_overrides.get(a.id, a.key)
            return ", ".join(self.get_key_display(Binding(k.strip(), a.action))
                             for k in key.split(","))

        screen = self.screen
        own = action_groups(screen)
        shown = own if isinstance(screen, DashboardScreen) else own + DashboardScreen.ACTION_GROUPS
        groups = help_groups(shown, read_only=self.read_only, key_of=key_of,
                             allowed=lambda a: a.id not in own_ids(screen)
                             or screen.check_action(a.name, ()) is not False)
        extra = [("tab", "next table"), ("ctrl+p", "command palette")]
        groups = [(t, rows + extra if t == DASHBOARD.title else rows) for t, rows in groups]
        return groups + help_groups(["app"], read_only=self.read_only, key_of=key_of)


def own_ids(screen: Any) -> set[str]:
    """Binding ids of the registry groups a screen declares (``ACTION_GROUPS``)."""
    return {a.id for k in action_groups(screen) for a in action_group(k)}


def known_binding_ids() -> set[str]:
    """Every binding id the config's keymap may name: the registry's and Textual's own."""
    from textual.dom import DOMNode

    ids = known_ids()
    todo: list[type] = [DOMNode]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("textual."):
            ids |= {b.id for b in cls.__dict__.get("BINDINGS", [])
                    if isinstance(b, Binding) and b.id}
    return ids
