"""key_latency: key press to the first frame that shows its effect, on a busy dashboard.

The app (``BitmapTuiApp`` with a real Fleet, headless under ``run_test``) is connected to many
fake QMP servers (``fakefleet``, a separate process; optionally real QEMUs too) and to one
``floodserver`` in paced mode sending job events at a fixed rate for the whole run; that flood
connection is the one on screen, so its nodes table, jobs table and event log keep changing.

Keys go in where a terminal's keys do (``driver.send_message(Key)``), one at a time with a short
pause between them, and each is timed from being sent to the first frame produced
(``FrameRecorder``) after its effect holds in the widgets: the nodes table's cursor moved
(``down``/``up``), the filter box opened, the table filtered by the text typed so far, the filter
closed (``slash``, letters, ``escape``), the add-bitmap dialog is the screen being drawn and then
the dashboard again (``n``, ``escape``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import emit, histogram, median, percentile, r
from benchmarks.frames import FrameRecorder
from benchmarks.servers import server_process
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet

SIZE = (120, 40)
FLOOD = "a-flood"  # first in the store: the connection the dashboard shows
FILTER_TEXT = "disk1"
# Characters the keys type (Textual's key names for the others).
CHARS = {"slash": "/", "escape": "\x1b", "down": None, "up": None}


async def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


Check = Callable[[], bool]


def key_plan(app: Any, recorder: FrameRecorder) -> list[tuple[str, str, Callable[[], Check]]]:
    """One round of ``(kind, key, arm)``, in order. ``arm()`` is called just before the key is
    sent and returns the check "its effect is in the widgets", evaluated at each frame (for a
    dialog: the frame is drawn from the dialog's screen)."""
    from textual.widgets import Input

    from tui.ui.screens.bitmap_dialogs import AddBitmapDialog

    dash = app.dashboard
    table = dash.nodes_table
    box = dash.query_one("#filter", Input)

    def cursor_moved(step: int) -> Check:
        start = table.cursor_row
        return lambda: table.cursor_row == start + step

    def filtered(text: str) -> Check:
        return lambda: table.name_filter == text

    def filter_open() -> Check:
        return lambda: bool(box.display and box.has_focus)

    def filter_closed() -> Check:
        return lambda: not box.display and table.name_filter == ""

    def dialog_open() -> Check:
        return lambda: isinstance(app.screen, AddBitmapDialog) and recorder.last_screen is app.screen

    def dialog_closed() -> Check:
        return lambda: app.screen is dash and recorder.last_screen is dash

    plan: list[tuple[str, str, Callable[[], Check]]] = []
    for step in [1] * 5 + [-1] * 5:
        plan.append(("cursor", "down" if step > 0 else "up", partial(cursor_moved, step)))
    plan.append(("filter", "slash", filter_open))
    for i, ch in enumerate(FILTER_TEXT):
        plan.append(("filter", ch, partial(filtered, FILTER_TEXT[: i + 1])))
    plan.append(("filter", "escape", filter_closed))
    plan.append(("dialog", "n", dialog_open))
    plan.append(("dialog", "escape", dialog_closed))
    return plan


async def measure(fakes: list[str], qemus: list[str], flood_sock: str, rate: float,
                  rounds: int, gap: float) -> dict[str, Any]:
    from textual import events

    from tui.session import ConsoleContext
    from tui.ui.app import BitmapTuiApp

    fleet = Fleet(reconnect=False, connect_timeout=60)
    flood = fleet.add(Endpoint(FLOOD, parse_address(f"unix:{flood_sock}")))
    for i, path in enumerate(fakes):
        fleet.add(Endpoint(f"fake{i:03d}", parse_address(f"unix:{path}")))
    for i, path in enumerate(qemus):
        fleet.add(Endpoint(f"qemu{i:02d}", parse_address(f"unix:{path}")))
    app = BitmapTuiApp(ConsoleContext.of_fleet(fleet))
    waiting: list[tuple[Check, asyncio.Future[float]]] = []
    latencies: dict[str, list[float]] = {"cursor": [], "filter": [], "dialog": []}
    timeouts = 0

    def on_frame(t: float) -> None:
        if waiting and not waiting[0][1].done() and waiting[0][0]():
            waiting[0][1].set_result(t)

    async with app.run_test(size=SIZE) as pilot:
        conns = fleet.store.state.connections
        await _until(lambda: all(c.synced for c in fleet.store.state.connections.values()),
                     180, f"{len(conns)} connections to sync")
        recorder = FrameRecorder(app, on_frame)
        # Paced events for longer than the keys take; the server stops when we disconnect.
        await flood.execute("query-flood", {"count": int(rate * 3600), "rate": rate})
        await asyncio.sleep(0.5)
        table = app.dashboard.nodes_table
        table.focus()
        await pilot.pause()
        driver = app._driver
        assert driver is not None
        plan = key_plan(app, recorder)
        started = time.monotonic()
        events_before = fleet.store.events_seen
        for _ in range(rounds):
            for kind, key, arm in plan:
                shown = arm()
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiting[:] = [(shown, fut)]
                event = events.Key(key, CHARS.get(key, key))
                event.set_sender(app)
                t0 = time.monotonic()
                driver.send_message(event)
                try:
                    t1 = await asyncio.wait_for(fut, 10)
                except TimeoutError:
                    timeouts += 1
                    t1 = time.monotonic()
                    if not shown():
                        raise RuntimeError(f"key {key!r} ({kind}) had no effect") from None
                latencies[kind].append((t1 - t0) * 1000)
                await asyncio.sleep(gap)
        elapsed = time.monotonic() - started
        events_during = fleet.store.events_seen - events_before
        connections = len(fleet.store.state.connections)
    await fleet.stop()
    every = [x for values in latencies.values() for x in values]
    out: dict[str, Any] = {
        "connections": connections,
        "fake_servers": len(fakes),
        "real_qemus": len(qemus),
        "event_rate": rate,
        "events_per_s_measured": r(events_during / elapsed, 1),
        "presses": len(every),
        "p50_ms": r(percentile(every, 50), 1),
        "p99_ms": r(percentile(every, 99), 1),
        "max_ms": r(max(every), 1),
        "timeouts": timeouts,
        "histogram": histogram(every),
        "size": f"{SIZE[0]}x{SIZE[1]}",
    }
    for kind, values in latencies.items():
        out[f"{kind}_p50_ms"] = r(median(values), 1)
        out[f"{kind}_p99_ms"] = r(percentile(values, 99), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fakes", type=int, default=200)
    p.add_argument("--qemus", type=int, default=0)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--gap", type=float, default=0.05, help="pause after each key's frame (s)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        sock = str(Path(tmp) / "flood.sock")
        with server_process("fakefleet", tmp, str(a.fakes), "8", "4", str(a.qemus)) as fleet, \
                server_process("floodserver", sock):
            payload = json.loads(fleet.payload)
            emit(asyncio.run(measure(payload["fake"], payload["qemu"], sock, a.rate, a.rounds,
                                     a.gap)))


if __name__ == "__main__":
    main()
