"""Helpers for the dashboard tests: open the app on a fleet, read what was sent, wait on screen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.kit.common import wait_for
from tui.core.base.audit import changes
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.messages import OperationFinished, StateRendered
from tui.ui.screens.dashboard import DashboardScreen


class Messages:
    """Every message posted in a test app (Textual's ``message_hook``)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.seen.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.seen if isinstance(m, kind)]

    def rendered(self) -> int:
        """The newest store generation a screen put on screen (-1: none yet)."""
        return max((m.generation for m in self.of(StateRendered)), default=-1)


_MESSAGES: dict[int, Messages] = {}


def watch(app: Any, **kw: Any) -> Any:
    """``app.run_test(**kw)`` recording the app's messages (see :func:`messages`)."""
    rec = Messages()
    _MESSAGES[id(app)] = rec
    return app.run_test(message_hook=rec, **kw)


def messages(app: Any) -> Messages:
    return _MESSAGES[id(app)]


def calls_of(obj: Any, method: str) -> list[tuple[Any, ...]]:
    """Record the arguments of every call of ``obj.method`` from now on (an instance attribute
    shadows the class's; the method still runs)."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(obj, method)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    setattr(obj, method, recorded)
    return calls


def sent_commands(audit_path: Path) -> list[str]:
    """Mutating commands that reached QEMU (the core audits every one)."""
    return [e["command"] for e in changes(audit_path)]


@asynccontextmanager
async def running(fleet: Any, size: tuple[int, int] = (80, 24), *,
                  ledger: Path | None = None, **kw: Any) -> AsyncIterator[Any]:
    """``async with running(fleet) as (app, pilot, dash)``: the dashboard on a started fleet
    (with ``ledger``: the console's ledger, whose chains its dialogs guard)."""
    app = BitmapTuiApp(ConsoleContext.of_fleet(fleet, ledger_path=ledger), **kw)
    async with watch(app, size=size) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        yield app, pilot, dash


async def settle(pilot: Any, dash: DashboardScreen) -> None:
    """Let pending renders reach the screen."""
    seen = messages(dash.app)
    await wait_for(lambda: seen.rendered() == dash.store.generation, what="render")
    await pilot.pause()


def outcomes_seen(dash: DashboardScreen) -> int:
    """How many operation outcomes the dashboard has reported so far."""
    return len(messages(dash.app).of(OperationFinished))


async def outcome(pilot: Any, dash: DashboardScreen, before: int) -> Any:
    """Wait for the next reported outcome after ``before`` outcomes."""
    seen = messages(dash.app)
    await wait_for(lambda: len(seen.of(OperationFinished)) > before, timeout=15, what="an outcome")
    await pilot.pause()
    return seen.of(OperationFinished)[-1].outcome


def bitmap(fleet: Any, node: str, name: str, conn: str = "vm0") -> Any:
    return fleet.store.connection(conn).nodes[node].bitmap(name)


def screen_text(app: Any) -> str:
    """Everything visible on screen, as text (what a terminal would show)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def make_app(fleet, ledger, pol, **kw):
    """The console on ``fleet`` with ``ledger`` and the one policy ``pol`` (``kw``: the
    context's fields, e.g. ``read_only=True``)."""
    return BitmapTuiApp(ConsoleContext.of_fleet(fleet, ledger_path=ledger.path,
                                                policies={pol.name: pol}, **kw))
