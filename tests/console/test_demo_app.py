"""The demo inside the app: its palette command makes drive1's next read fail, and the running
backup fails on screen (a real QEMU)."""

from __future__ import annotations

import pytest

from tests.kit.common import requires_qemu, wait_for
from tests.kit.dashboard import screen_text
from tui.core.model.state import BitmapState, JobResult
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.demo.vm import BACKUP_JOB, Demo
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.demo_commands import palette_commands
from tui.ui.palette import commands_for, register_commands

pytestmark = requires_qemu


@pytest.fixture
async def demo():
    d = Demo(write_interval=0.2, seed=3)
    await d.start()
    yield d
    await d.close()


async def test_palette_fail_next_read_fails_the_backup(demo):
    register_commands(palette_commands)
    fleet = Fleet(job_poll_interval=0.1, backoff_max=0.5)
    fleet.add(Endpoint("demo", parse_address(demo.address)))
    app = BitmapTuiApp(ConsoleContext.of_fleet(fleet, demo=demo))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            model = lambda: fleet.store.connection("demo")  # noqa: E731
            await wait_for(lambda: BACKUP_JOB in model().jobs, what="the demo backup")
            titles = [c.title for c in commands_for(app, app.screen)]
            assert "demo: Fail next read on drive1" in titles
            await pilot.press("ctrl+p")
            await pilot.pause()
            for ch in "fail next read":
                await pilot.press(ch)
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(lambda: model().jobs[BACKUP_JOB].result is JobResult.FAILED, timeout=30,
                           what="the backup to fail")
            await wait_for(
                lambda: model().nodes["disk1"].bitmap("in-backup").state is BitmapState.ACTIVE,
                what="the bitmap to be restored",
            )
            await wait_for(lambda: "Input/output error" in screen_text(app)
                           or "failed" in screen_text(app), what="the failure on screen")
    finally:
        await fleet.stop()


async def test_no_demo_commands_without_a_demo():
    app = BitmapTuiApp()
    assert palette_commands(app) == []
