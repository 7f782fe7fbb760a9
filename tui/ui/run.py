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
from tui.core.qmp.fleet import Endpoint
from tui.core.txn.model import Transaction
from tui.demo.sandbox import SandboxError
from tui.demo.vm import CONNECTION, Demo
from tui.session import Session
from tui.ui.app import BitmapTuiApp, known_binding_ids
from tui.ui.demo_commands import palette_commands
from tui.ui.palette import register_commands
from tui.ui.terminal import EXIT_INTERRUPTED, TerminalGuard
from tui.ui.themes import ThemeSet, adapt_to_terminal, load_themes

Startup = Callable[[Any], Awaitable[None]]
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

    async def open_composer(app: Any) -> None:
        from tui.ui.screens.composer import ComposerScreen

        # the forms offer what exists: wait for the first answer before building them
        with contextlib.suppress(TimeoutError):
            await app.fleet.wait_first_answer(app.first_answer_timeout)
        # through the dashboard: what is left unsent is kept as a draft (t reopens it)
        app.dashboard.ops.open_composer(connection,
                                        ComposerScreen(app.fleet, connection, txn, path=path))

    return open_composer


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except asyncio.CancelledError:  # SIGTERM/SIGHUP before the app was up: cleaned up already
        return EXIT_INTERRUPTED


async def _serve(session: Session, themes: ThemeSet, startup: Startup | None,
                 demo_settings: DemoSettings | None) -> int:
    app: BitmapTuiApp | None = None
    fleet: Any = None
    demo: Demo | None = None
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    async def leave() -> None:
        # The QMP sockets first (the next session must be able to connect), then the app: its
        # driver may block on a terminal nobody reads any more (the watchdog covers that).
        if fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fleet.stop(), FLEET_CLOSE_SECONDS)
        if app is not None and app.is_running:
            app.exit(EXIT_INTERRUPTED)
        elif main is not None:
            main.cancel()

    pending: set[asyncio.Task[None]] = set()

    def lost() -> None:
        task = loop.create_task(leave())
        pending.add(task)
        task.add_done_callback(pending.discard)

    def emergency() -> None:
        # From the watchdog thread, right before os._exit: the demo QEMU and its scratch files.
        if demo is not None:
            with contextlib.suppress(Exception):
                demo.sandbox.kill()
            shutil.rmtree(demo.sandbox.dir, ignore_errors=True)

    guard = TerminalGuard(loop, lost, emergency)
    guard.install()
    try:
        async with contextlib.AsyncExitStack() as stack:
            endpoints = None
            if demo_settings is not None:
                # The demo sandbox, removed again on the way out; its audit log lives (and goes)
                # with its scratch directory.
                demo = Demo(write_interval=demo_settings.write_interval)
                stack.push_async_callback(demo.close)
                await demo.start()
                register_commands(palette_commands)
                endpoints = [Endpoint("demo", parse_address(demo.address))]
                session = session.with_options(audit_log=str(demo.sandbox.path("audit.jsonl")))
            stack.callback(session.close)
            fleet = session.open_fleet(endpoints, reconnect=True)
            stack.push_async_callback(fleet.stop)
            if demo is not None:
                fleet.connections[CONNECTION].note_job_node(demo.backup_job, demo.backup_node)
            app = BitmapTuiApp(fleet=fleet, theme_name=session.theme, themes=themes,
                               keymap=session.config.keymap, demo=demo,
                               policies=dict(session.config.policies), startup=startup)
            app.first_answer_timeout = session.first_answer_timeout
            adapt_to_terminal(app)  # 16 colours: the ANSI theme, whose states stay apart
            try:
                await app.run_async()
            finally:
                # no new reconcile runs while the connections close
                getattr(app, "_chains_unwatch", lambda: None)()
            return app.return_code or 0
    finally:
        guard.uninstall()
