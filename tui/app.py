"""The Textual application: setup only. Screens live in ``tui/screens``, widgets in ``tui/widgets``.

``run_app(args)`` (called by ``tui/cli.py``) builds a Fleet from ``--connect`` or the config,
or starts a local demo QEMU when nothing is given, and opens the dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.model.store import Store
from tui.palette import ContextCommands
from tui.screens.actions import MUTATING
from tui.screens.dashboard import DashboardScreen
from tui.screens.help import HelpScreen
from tui.theme_vars import resolve_defaults
from tui.themes import DEFAULT_THEME, ThemeSet, load_themes, register_themes


class BitmapTuiApp(App[int]):
    """bitmap-tui. Give it a started or unstarted ``fleet`` (or just a ``store`` to only show)."""

    CSS_PATH = "app.tcss"
    TITLE = "bitmap-tui"
    COMMANDS = App.COMMANDS | {ContextCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.interrupt"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("l", "chains", "Chains", id="app.chains"),
    ]
    # Backup chains screen: a ledger and policies to use instead of the defaults (tests, embedding).
    chains_ledger: Any = None
    chains_policies: Any = None

    # A coroutine run once the app is up (after the fleet started): ``startup(app)``.
    startup: Callable[[Any], Awaitable[None]] | None = None

    def __init__(self, *, fleet: Any = None, store: Store | None = None, read_only: bool = False,
                 clock: Callable[[], float] = time.monotonic, theme_name: str | None = None,
                 themes: ThemeSet | None = None, keymap: dict[str, str] | None = None,
                 demo: Any = None) -> None:
        super().__init__()
        self.fleet = fleet
        self.store: Store = store or (fleet.store if fleet is not None else Store())
        self.read_only = read_only or bool(getattr(fleet, "read_only", False))
        self.clock = clock
        self.theme_name = theme_name
        # The demo sandbox when running `bitmap-tui demo` (its palette commands look for it).
        self.demo = demo
        # Our themes (built-in and the user's) join Textual's, so the palette's theme switcher
        # offers them; chosen here, before the stylesheet is first parsed.
        self.themes = themes if themes is not None else load_themes()
        register_themes(self, self.themes)
        if (theme_name or DEFAULT_THEME) in self.available_themes:
            self.theme = theme_name or DEFAULT_THEME
        if keymap:
            self.set_keymap(keymap)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # $bitmap-frozen and friends default to the current theme's colours; themes may override.
        return resolve_defaults(self.current_theme.to_color_system().generate())

    def get_default_screen(self) -> Screen[Any]:
        return DashboardScreen(self.store, fleet=self.fleet, read_only=self.read_only,
                               clock=self.clock)

    def on_mount(self) -> None:
        # Everything loaded so far (Textual, the widgets, the config) lives as long as the app:
        # keep it out of the cyclic GC's full collections, whose pauses otherwise grow with
        # the event history and showed as the latency tail under event floods (benchmarks/).
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        if self.theme_name and self.theme_name not in self.available_themes:
            self.notify(f"unknown theme '{self.theme_name}'", severity="error")
        for problem in self.themes.problems:  # each broken user theme, once
            self.notify(problem, severity="warning", timeout=10)
        if self.fleet is not None:
            self.fleet.start()
            if not self.read_only:
                from tui.chains.reconcile import watch_fleet

                # Backup jobs that ended while the app was away are resolved on every connect.
                self._chains_unwatch = watch_fleet(self.fleet, self.chains_ledger)
        if self.startup is not None:  # e.g. `bitmap-tui compose` opens the composer
            self.run_worker(self.startup(self), name="startup", exit_on_error=False)

    @property
    def dashboard(self) -> DashboardScreen:
        """The dashboard (the default screen), even while dialogs are open above it."""
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                return screen
        raise LookupError("no dashboard screen")

    @property
    def rendered_generation(self) -> int:
        """Store generation last drawn by the dashboard (for the latency benchmark)."""
        return self.dashboard.rendered_generation

    def action_chains(self) -> None:
        """Open the backup chains screen (ledger, policies, run policy)."""
        from tui.screens.chains import ChainsScreen

        if isinstance(self.screen, ChainsScreen):
            return
        self.push_screen(ChainsScreen(self.store, fleet=self.fleet, read_only=self.read_only,
                                      ledger=self.chains_ledger, policies=self.chains_policies))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Key bindings by area, as remapped by the keymap, without mutating ones if read-only."""
        from tui.widgets.jobs import JobsTable
        from tui.widgets.nodes import NodesTable

        keymap: dict[str, str] = dict(getattr(self, "_keymap", {}) or {})

        def rows(bindings: Iterable[Binding | Any]) -> list[tuple[str, str]]:
            out = []
            for b in bindings:
                if not isinstance(b, Binding):
                    continue
                if self.read_only and b.action.removeprefix("screen.") in MUTATING:
                    continue
                key = keymap.get(b.id or "", b.key)
                label = ", ".join(self.get_key_display(Binding(k.strip(), b.action))
                                  for k in key.split(","))
                out.append((label, b.description or b.action))
            return out

        # A screen pushed over the dashboard (the composer, ...) shows its own keys first.
        screen = self.screen
        own: list[tuple[str, list[tuple[str, str]]]] = []
        help_title = getattr(screen, "HELP_TITLE", None)
        if not isinstance(screen, DashboardScreen) and help_title:
            # only the keys the screen allows now (read-only hides its mutating ones)
            allowed = [b for b in type(screen).BINDINGS if isinstance(b, Binding)
                       and screen.check_action(b.action.split("(")[0], ()) is not False]
            own = [(str(help_title), rows(allowed))]
        groups = own + [
            ("Bitmaps (nodes table)", rows(NodesTable.BINDINGS)),
            ("Jobs (jobs table)", rows(JobsTable.BINDINGS)),
            ("Dashboard", rows(DashboardScreen.BINDINGS)
             + [("tab", "next table"), ("ctrl+p", "command palette")]),
            ("Everywhere", rows(self.BINDINGS)),
        ]
        # Read-only leaves the bitmap and job groups empty: no heading without keys.
        return [(title, keys) for title, keys in groups if keys]


def known_binding_ids() -> set[str]:
    """Every binding id of the app's screens and widgets (and Textual's), for checking a keymap."""
    import importlib
    import pkgutil

    from textual.dom import DOMNode

    import tui.screens
    import tui.widgets

    for pkg in (tui.screens, tui.widgets):
        for mod in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(mod.name)
    ids: set[str] = set()
    todo: list[type] = [DOMNode]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        for b in cls.__dict__.get("BINDINGS", []):
            if isinstance(b, Binding) and b.id:
                ids.add(b.id)
    return ids


async def _serve(args: argparse.Namespace, endpoints: list[Any], cfg: Any, themes: ThemeSet,
                 theme: str) -> int:
    from tui.audit import open_audit
    from tui.qmp.address import parse_address
    from tui.qmp.fleet import Endpoint, Fleet

    app: BitmapTuiApp | None = None
    main = asyncio.current_task()

    def stop() -> None:
        # A plain `kill` or a closed terminal must also stop the demo QEMU: leave through the
        # cleanup path, whether the app is up yet or the demo is still starting.
        if app is not None and app.is_running:
            app.exit()
        elif main is not None:
            main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    async with contextlib.AsyncExitStack() as stack:
        demo = None
        if not endpoints or getattr(args, "demo", False):
            # No connection given: open on the demo sandbox, removed again on the way out.
            from tui.demo import Demo, palette_commands
            from tui.palette import register_commands

            demo = Demo(write_interval=float(getattr(args, "write_interval", 0.5)))
            stack.push_async_callback(demo.close)
            await demo.start()
            register_commands(palette_commands)
            endpoints = [Endpoint("demo", parse_address(demo.address))]
        # The demo's audit log lives (and goes) with its scratch directory.
        # --audit-log wins over the config; an unwritable log is one line, not a traceback.
        audit = open_audit(demo.sandbox.path("audit.jsonl") if demo
                           else getattr(args, "audit_log", None) or cfg.audit_path())
        stack.callback(audit.close)
        timeout = float(getattr(args, "timeout", 5.0))
        fleet = Fleet(
            read_only=bool(getattr(args, "read_only", False)) or cfg.defaults.read_only,
            refresh_interval=cfg.defaults.refresh_interval,
            # --timeout has a default of 5 s: the config's value wins unless one was typed.
            connect_timeout=cfg.defaults.connect_timeout if timeout == 5.0 else timeout,
            audit=audit,
        )
        for ep in endpoints:
            fleet.add(ep)
        stack.push_async_callback(fleet.stop)
        app = BitmapTuiApp(fleet=fleet, theme_name=theme, themes=themes, keymap=cfg.keymap,
                           demo=demo)
        # The chains screen runs the policies of the config this app was started with.
        app.chains_policies = dict(cfg.policies)
        app.startup = getattr(args, "startup", None)
        await app.run_async()
        return app.return_code or 0


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except asyncio.CancelledError:  # SIGTERM/SIGHUP before the app was up: cleaned up already
        return 143


def run_app(args: argparse.Namespace) -> int:
    """Open the dashboard on ``--connect`` endpoints, the config's, or a local demo QEMU.

    The config, the theme and the keymap are all checked before anything starts: a problem is
    one ConfigError line, never a half-configured app.
    """
    from tui.cli import resolve_endpoints
    from tui.config import load_config
    from tui.sandbox import SandboxError

    cfg = load_config(getattr(args, "config", None))
    endpoints = [] if getattr(args, "demo", False) else resolve_endpoints(args)
    themes = load_themes()
    theme = getattr(args, "theme", None) or cfg.defaults.theme
    themes.get(theme)  # an unknown name: ConfigError listing the available ones
    cfg.check_keymap(known_binding_ids())
    try:
        return _run(_serve(args, endpoints, cfg, themes, theme))
    except SandboxError as exc:
        print(f"bitmap-tui: cannot start the demo QEMU: {exc}", file=sys.stderr)
        return 2
