"""Palette commands offered while the console runs on the demo sandbox."""

from __future__ import annotations

from typing import Any

from tui.demo.vm import CONNECTION
from tui.ui.app import BitmapTuiApp
from tui.ui.palette import PaletteCommand


def palette_commands(app: BitmapTuiApp) -> list[PaletteCommand]:
    """Palette commands while the app runs on a demo (its context's ``demo``): inject a read
    failure, restart the slow backup."""
    demo = app.context.demo
    if demo is None:
        return []

    async def fail() -> None:
        await demo.fail_next_read()
        app.notify("drive1's next read will fail once (EIO): watch the backup job")

    async def backup() -> None:
        await demo.restart_backup()
        fleet = app.fleet
        if fleet is not None and CONNECTION in fleet.connections:
            fleet.connections[CONNECTION].note_job_node(demo.backup_job, demo.backup_node)
        app.notify(f"backup {demo.backup_job} of drive1 started")

    def run(coro: Any, name: str) -> Any:
        return lambda: app.run_worker(coro(), name=name, group="demo", exit_on_error=False)

    return [
        PaletteCommand(
            "demo: Fail next read on drive1",
            "blkdebug: drive1's next read fails once with EIO (a partial failure)",
            run(fail, "demo-fail-read"),
        ),
        PaletteCommand(
            "demo: Restart the slow backup of drive1",
            "dismiss the ended backup job and start a new one (its bitmap freezes)",
            run(backup, "demo-backup"),
        ),
    ]
