"""The documentation's two examples (docs/bitmaps.md, partial failure and grouped completion)
performed from the dashboard on a real QEMU, counting the keys to the verdict."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from tests.kit.common import requires_qemu, wait_for
from tests.kit.dashboard import running
from tui.ui.screens.composer import ComposerScreen

pytestmark = requires_qemu

#: The goal: the documentation's workflow in at most this many keys from the dashboard.
MAX_KEYS = 10


class CountingKeys:
    """``pilot.press`` that counts every key pressed."""

    def __init__(self, pilot: Any) -> None:
        self.pilot = pilot
        self.count = 0

    async def press(self, *keys: str) -> None:
        self.count += len(keys)
        await self.pilot.press(*keys)
        await self.pilot.pause()


async def two_drives(make_sandbox: Any) -> Any:
    """The documentation's set-up: drive0 and drive1 with bitmap0/bitmap1 and some writes;
    drive1's next read fails (the example's Input/output error)."""
    sb = await make_sandbox(drives=2, failing=[1])
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "1M")
    await sb.arm_read_error(1)
    return sb


async def verdict_of(app: Any, keys: CountingKeys, *press: str) -> Any:
    for key in press:
        await keys.press(key)
    composer = app.screen
    assert isinstance(composer, ComposerScreen)
    await wait_for(lambda: composer.verdict is not None, 60, "the verdict")
    return composer


async def test_individual_example_in_few_keys(make_sandbox, fleet_for):
    sb = await two_drives(make_sandbox)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    async with running(fleet, size=(80, 24)) as (app, pilot, _dash):
        keys = CountingKeys(pilot)
        # B: every drive; Enter: the default targets; m: individual; s: send
        composer = await verdict_of(app, keys, "B", "enter", "m", "s")
        v = composer.verdict
        assert keys.count == 4 <= MAX_KEYS
        assert v.accepted and v.completion_mode == "individual"
        assert [(j.device, j.result) for j in v.jobs] == [
            ("drive0", "completed"), ("drive1", "failed")]
        assert [(i.path.rsplit("/", 1)[-1], i.verdict) for i in v.images] == [
            ("drive0-incr-1.qcow2", "valid"), ("drive1-incr-1.qcow2", "invalid")]
        assert [(b.name, b.outcome) for b in v.bitmaps] == [
            ("bitmap0", "cleared"), ("bitmap1", "restored")]
        assert app.focused is composer.query_one("#run-panel")  # readable and scrollable
        await pilot.pause(0.3)
        # no toast over the verdict: the failure is in the verdict itself
        assert [n.message for n in app._notifications] == []
        # VALID only once released: the targets the console created are detached (flushed and
        # closed by QEMU), so the image on disk is whole
        nodes = {n["node-name"] for n in await sb.qmp("query-named-block-nodes", {"flat": True})}
        assert not [n for n in nodes if "incr" in n], nodes
        check = await asyncio.to_thread(subprocess.run, ["qemu-img", "check", v.images[0].path],
                                        capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


async def test_grouped_example_in_few_keys(make_sandbox, fleet_for):
    sb = await two_drives(make_sandbox)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    async with running(fleet, size=(80, 24)) as (app, pilot, _dash):
        keys = CountingKeys(pilot)
        composer = await verdict_of(app, keys, "B", "enter", "s")  # grouped is B's default
        v = composer.verdict
        assert keys.count == 3 <= MAX_KEYS
        assert v.accepted and v.completion_mode == "grouped"
        assert {j.device: j.result for j in v.jobs}["drive1"] == "failed"
        assert {j.device: j.result for j in v.jobs}["drive0"] in ("cancelled", "failed")
        assert [i.verdict for i in v.images] == ["invalid", "invalid"]
        assert [(b.name, b.outcome) for b in v.bitmaps] == [
            ("bitmap0", "restored"), ("bitmap1", "restored")]
