"""Start the console on a :class:`tui.session.Session`: the fleet from the session (read-only and
the audit log decided there), or a local demo QEMU when the session names no connection.

The config, the theme and the keymap are all checked before anything starts: a problem is one
ConfigError line, never a half-configured app.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tui.core.base.text import LINE_LIMIT, shown
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.core.txn.model import Transaction
from tui.demo.sandbox import SandboxError
from tui.demo.vm import CONNECTION, Demo
from tui.session import Session
from tui.ui.app import BitmapTuiApp, known_binding_ids
from tui.ui.demo_commands import palette_commands
from tui.ui.palette import register_commands
from tui.ui.terminal import EXIT_INTERRUPTED, TerminalGuard
from tui.ui.themes import ThemeSet, adapt_to_terminal, load_themes

Startup = Callable[[BitmapTuiApp], Awaitable[None]]
# How long a lost terminal's shutdown waits for the connections to close before the app goes.
FLEET_CLOSE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """The demo sandbox's knobs (``bitmap-tui demo``)."""

    write_interval: float = 0.5


def run_console(session: Session, *, startup: Startup | None = None,
                demo: DemoSettings | None = None) -> int:
    """Open the dashboard; a demo QEMU when ``demo`` is given or the session has no connection."""
    themes = load_themes()
    themes.get(session.theme)  # an unknown name: ConfigError listing the available ones
    session.config.check_keymap(known_binding_ids())
    if demo is None and not session.endpoints():
        demo = DemoSettings()
    try:
        return _run(_serve(session, themes, startup, demo))
    except SandboxError as exc:
        print(f"bitmap-tui: cannot start the demo QEMU: {shown(str(exc), LINE_LIMIT)}", file=sys.stderr)
        return 2


def open_composer_at_start(connection: str, txn: Transaction | None,
                           path: str | None) -> Startup:
    """A startup step that opens the composer on ``connection`` once it has answered."""

    async def open_composer(app: BitmapTuiApp) -> None:
        from tui.ui.screens.composer import ComposerScreen

        # the forms offer what exists: wait for the first answer before building them
        if app.fleet is None:
            return
        with contextlib.suppress(TimeoutError):
            await app.fleet.wait_first_answer(app.context.first_answer_timeout)
        # through the dashboard: what is left unsent is kept as a draft (t reopens it)
        app.dashboard.ops.open_composer(connection,
                                        ComposerScreen(app.context, connection, txn, path=path))

    return open_composer


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except asyncio.CancelledError:  # SIGTERM/SIGHUP before the app was up: cleaned up already
        return EXIT_INTERRUPTED


async def _start_demo(stack: contextlib.AsyncExitStack, session: Session,
                      settings: DemoSettings) -> tuple[Session, Demo, list[Endpoint]]:
    """The demo sandbox, removed again on the way out; its audit log lives (and goes) with its
    scratch directory."""
    demo = Demo(write_interval=settings.write_interval)
    stack.push_async_callback(demo.close)
    await demo.start()
    register_commands(palette_commands)
    session = session.with_options(audit_log=str(demo.sandbox.path("audit.jsonl")))
    return session, demo, [Endpoint(CONNECTION, parse_address(demo.address))]


class _Console:
    """One console run: the app, its fleet and demo, and the way out when the terminal is lost."""

    def __init__(self) -> None:
        self.app: BitmapTuiApp | None = None
        self.fleet: Fleet | None = None
        self.demo: Demo | None = None
        self.main = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.pending: set[asyncio.Task[None]] = set()

    async def leave(self) -> None:
        # The QMP sockets first (the next session must be able to connect), then the app: its
        # driver may block on a terminal nobody reads any more (the watchdog covers that).
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.fleet.stop(), FLEET_CLOSE_SECONDS)
        if self.app is not None and self.app.is_running:
            self.app.exit(EXIT_INTERRUPTED)
        elif self.main is not None:
            self.main.cancel()

    def lost(self) -> None:
        task = self.loop.create_task(self.leave())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def emergency(self) -> None:
        # From the watchdog thread, right before os._exit: the demo QEMU and its scratch files.
        if self.demo is not None:
            with contextlib.suppress(Exception):
                self.demo.sandbox.kill()
            shutil.rmtree(self.demo.sandbox.dir, ignore_errors=True)


async def _serve(session: Session, themes: ThemeSet, startup: Startup | None,
                 demo_settings: DemoSettings | None) -> int:
    run = _Console()
    guard = TerminalGuard(run.loop, run.lost, run.emergency)
    guard.install()
    try:
        async with contextlib.AsyncExitStack() as stack:
            endpoints = None
            if demo_settings is not None:
                session, run.demo, endpoints = await _start_demo(stack, session, demo_settings)
            stack.callback(session.close)
            run.fleet = fleet = session.open_fleet(endpoints, reconnect=True)
            stack.push_async_callback(fleet.stop)
            if run.demo is not None:
                fleet.connections[CONNECTION].note_job_node(run.demo.backup_job,
                                                            run.demo.backup_node)
            # Backup jobs that ended while no console ran are resolved on every connect; the
            # watch stops before the connections close (no new reconcile runs then).
            stack.callback(session.watch_chains(fleet))
            run.app = app = BitmapTuiApp(session.console_context(fleet, run.demo),
                                         theme_name=session.theme, themes=themes,
                                         keymap=session.config.keymap, startup=startup)
            adapt_to_terminal(app)  # 16 colours: the ANSI theme, whose states stay apart
            await app.run_async()
            return app.return_code or 0
    finally:
        guard.uninstall()
