"""A clean exit: quitting the demo or a fleet console leaves nothing on stderr (no "Task
exception was never retrieved", no late tracebacks), every time."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.terminal import Tmux, cpu_load

pytestmark = requires_qemu

EXE = Path(sys.executable).parent / "bitmap-tui"
ROUNDS = int(os.environ.get("GUARDS_ROUNDS", "20"))


def after_exit(pane: str) -> str:
    """What the program left on the terminal once its (alternate) screen was gone."""
    lines = [ln for ln in pane.splitlines() if ln.strip() and not ln.startswith("Pane is dead")]
    return "\n".join(lines)


async def quit_once(argv: list[str], ready: str) -> str:
    """Start the console in a terminal, wait for ``ready``, press q; return what it printed
    after its screen was gone (Textual draws on stderr: the terminal is where to look)."""
    t = Tmux(argv, width=100, height=30)
    t.start()
    try:
        await t.wait_screen(ready, timeout=60)
        # q at a random moment of the poll cycle: sometimes while a query is on the wire
        await asyncio.sleep(random.uniform(0, 1.0))
        t.keys("q")
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while t.tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() != "1":
            assert loop.time() < end, "the console did not exit on q"
            await asyncio.sleep(0.05)
        return after_exit(t.tmux("capture-pane", "-p", "-S", "-", "-t", "t"))
    finally:
        t.stop()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
async def test_demo_quits_cleanly_every_time(tmp_path):
    with cpu_load():
        for i in range(ROUNDS):
            left = await quit_once([str(EXE), "demo", "--write-interval", "0.05"], "connected")
            assert left == "", f"round {i}: printed after quitting:\n{left}"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
async def test_fleet_console_quits_cleanly_every_time(make_sandbox, tmp_path):
    boxes = [await make_sandbox(drives=1) for _ in range(2)]
    argv = [str(EXE), "--audit-log", str(tmp_path / "audit.jsonl")]
    for sb in boxes:
        argv += ["--connect", sb.address]
    for sb in boxes:
        await sb.write(0, 0, "1M")
    with cpu_load():
        for i in range(ROUNDS):
            left = await quit_once(argv, "connected")
            assert left == "", f"round {i}: printed after quitting:\n{left}"


async def test_a_poll_query_failing_after_its_cancel_is_still_collected(sandbox, fleet_for,
                                                                       monkeypatch):
    """Python 3.11's wait_for returns a reply that arrived together with the cancel, so the
    poller can run one more query after stop() cancelled it, and fail with NotConnectedError
    (the demo's "Task exception was never retrieved"). Emulated: a node refresh that turns its
    cancellation into the error a next query would raise."""
    import gc

    from tui.core.base.errors import NotConnectedError
    from tui.core.qmp.connection import Connection

    real = Connection.refresh_nodes

    async def refresh_nodes(self):
        if not getattr(self, "armed", False):
            return await real(self)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise NotConnectedError(f"{self.name} is not connected") from None

    monkeypatch.setattr(Connection, "refresh_nodes", refresh_nodes)
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        fleet = await fleet_for(sandbox, refresh_interval=0.01)
        conn = fleet["vm0"]
        conn.armed = True
        conn.request_refresh()
        await asyncio.sleep(0.3)  # the poller now waits inside the armed refresh
        await fleet.stop()
        del conn, fleet
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)
    assert [str(c.get("exception")) for c in reported] == []
