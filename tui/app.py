"""The Textual application: setup only. Screens live in ``tui/screens``, widgets in ``tui/widgets``.

``run_app(args)`` (called by ``tui/cli.py``) builds a Fleet from ``--connect`` or the config,
or starts a local demo QEMU when nothing is given, and opens the dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable
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


class BitmapTuiApp(App[int]):
    """bitmap-tui. Give it a started or unstarted ``fleet`` (or just a ``store`` to only show)."""

    CSS_PATH = "app.tcss"
    TITLE = "bitmap-tui"
    COMMANDS = App.COMMANDS | {ContextCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.interrupt"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("b", "chains", "Backups", id="app.chains"),
    ]
    # Backup chains screen: a ledger and policies to use instead of the defaults (tests, embedding).
    chains_ledger: Any = None
    chains_policies: Any = None

    def __init__(self, *, fleet: Any = None, store: Store | None = None, read_only: bool = False,
                 clock: Callable[[], float] = time.monotonic, theme_name: str | None = None) -> None:
        super().__init__()
        self.fleet = fleet
        self.store: Store = store or (fleet.store if fleet is not None else Store())
        self.read_only = read_only or bool(getattr(fleet, "read_only", False))
        self.clock = clock
        self.theme_name = theme_name

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # $bitmap-frozen and friends default to the current theme's colours; themes may override.
        return resolve_defaults(self.current_theme.to_color_system().generate())

    def get_default_screen(self) -> Screen[Any]:
        return DashboardScreen(self.store, fleet=self.fleet, read_only=self.read_only,
                               clock=self.clock)

    def on_mount(self) -> None:
        if self.theme_name:
            if self.theme_name in self.available_themes:
                self.theme = self.theme_name
            else:
                self.notify(f"unknown theme '{self.theme_name}'", severity="error")
        if self.fleet is not None:
            self.fleet.start()
            if not self.read_only:
                from tui.chains.reconcile import watch_fleet

                # Backup jobs that ended while the app was away are resolved on every connect.
                self._chains_unwatch = watch_fleet(self.fleet, self.chains_ledger)

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

        return [
            ("Bitmaps (nodes table)", rows(NodesTable.BINDINGS)),
            ("Jobs (jobs table)", rows(JobsTable.BINDINGS)),
            ("Dashboard", rows(DashboardScreen.BINDINGS)
             + [("tab", "next table"), ("ctrl+p", "command palette")]),
            ("Everywhere", rows(self.BINDINGS)),
        ]


async def _serve(args: argparse.Namespace, endpoints: list[Any]) -> int:
    from tui.qmp.fleet import Fleet, endpoints_from

    async with contextlib.AsyncExitStack() as stack:
        if not endpoints:
            from tui.demo_default import default_demo

            endpoints = endpoints_from(await stack.enter_async_context(default_demo()))
        fleet = Fleet(read_only=bool(getattr(args, "read_only", False)),
                      connect_timeout=float(getattr(args, "timeout", 5.0)))
        for ep in endpoints:
            fleet.add(ep)
        stack.push_async_callback(fleet.stop)
        app = BitmapTuiApp(fleet=fleet, theme_name=getattr(args, "theme", None))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # A plain `kill` must also stop the demo QEMU: leave through the cleanup path.
            loop.add_signal_handler(signal.SIGTERM, app.exit)
        await app.run_async()
        return app.return_code or 0


def run_app(args: argparse.Namespace) -> int:
    """Open the dashboard on ``--connect`` endpoints, the config's, or a local demo QEMU."""
    from tui.cli import resolve_endpoints
    from tui.sandbox import SandboxError

    endpoints = resolve_endpoints(args)
    try:
        return asyncio.run(_serve(args, endpoints))
    except SandboxError as exc:
        print(f"bitmap-tui: cannot start the demo QEMU: {exc}", file=sys.stderr)
        return 2
