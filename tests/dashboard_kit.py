"""Helpers for the dashboard tests: open the app on a fleet, read what was sent, wait on screen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tui.audit import changes
from tui.ui.app import BitmapTuiApp
from tui.ui.screens.dashboard import DashboardScreen


def sent_commands(audit_path: Path) -> list[str]:
    """Mutating commands that reached QEMU (the core audits every one)."""
    return [e["command"] for e in changes(audit_path)]


@asynccontextmanager
async def running(fleet: Any, size: tuple[int, int] = (80, 24), **kw: Any) -> AsyncIterator[Any]:
    """``async with running(fleet) as (app, pilot, dash)``: the dashboard on a started fleet."""
    app = BitmapTuiApp(fleet=fleet, **kw)
    async with app.run_test(size=size) as pilot:
        dash = app.dashboard
        await wait_for(lambda: dash.rendered_generation == fleet.store.generation, what="first render")
        yield app, pilot, dash


async def settle(pilot: Any, dash: DashboardScreen) -> None:
    """Let pending renders reach the screen."""
    await wait_for(lambda: dash.rendered_generation == dash.store.generation, what="render")
    await pilot.pause()


async def outcome(pilot: Any, dash: DashboardScreen, before: int) -> Any:
    """Wait for the next reported outcome after ``before`` outcomes."""
    await wait_for(lambda: dash.outcomes > before, timeout=15, what="an outcome")
    await pilot.pause()
    return dash.last_outcome


def bitmap(fleet: Any, node: str, name: str, conn: str = "vm0") -> Any:
    return fleet.store.connection(conn).nodes[node].bitmap(name)


def screen_text(app: Any) -> str:
    """Everything visible on screen, as text (what a terminal would show)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())
