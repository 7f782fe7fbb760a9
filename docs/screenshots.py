"""Regenerate the README's screenshots: ``.venv/bin/python docs/screenshots.py``.

Runs the app on the demo sandbox (a real local QEMU), lets the guest writer and the slow backup
run for a moment, makes drive1's next read fail so a failed job shows, and saves SVGs with
Textual's ``save_screenshot`` into this directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tui.core.model.state import JobResult
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.demo.vm import BACKUP_JOB, Demo, palette_commands
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.palette import register_commands

HERE = Path(__file__).resolve().parent
SHOTS = [  # file, theme, size
    ("dashboard-dark.svg", "dark", (100, 30)),
    ("dashboard-light.svg", "light", (100, 30)),
    ("dashboard-ansi-80x24.svg", "ansi", (80, 24)),
    ("dashboard-wide.svg", "dark", (170, 40)),  # side by side from 160 columns
]


async def wait(pred, what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


async def main() -> None:
    register_commands(palette_commands)
    demo = Demo(write_interval=0.3, seed=7)
    await demo.start()
    # One fleet for every shot, started before the apps, so the event log has the story.
    fleet = Fleet(job_poll_interval=0.2)
    fleet.add(Endpoint("demo", parse_address(demo.address)))
    fleet.start()
    try:
        jobs = lambda: fleet.store.connection("demo").jobs  # noqa: E731
        await wait(lambda: BACKUP_JOB in jobs(), "the backup")
        await asyncio.sleep(1.0)
        await demo.fail_next_read()  # a failed job ...
        await wait(lambda: jobs()[BACKUP_JOB].result is JobResult.FAILED, "the failure")
        await demo.restart_backup()  # ... and a running one with its frozen bitmap
        await wait(lambda: demo.backup_job in jobs(), "the new backup")
        await asyncio.sleep(2.0)
        for name, theme, size in SHOTS:
            app = BitmapTuiApp(ConsoleContext.of_fleet(fleet, demo=demo), theme_name=theme)
            async with app.run_test(size=size) as pilot:
                await asyncio.sleep(0.5)
                await pilot.pause()
                app.save_screenshot(filename=name, path=str(HERE))
                print(f"saved docs/{name}")
    finally:
        await fleet.stop()
        await demo.close()


if __name__ == "__main__":
    asyncio.run(main())
