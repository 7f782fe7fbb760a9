"""ui_latency and table_update: the running dashboard, headless.

ui_latency: the app (``BitmapTuiApp`` with a real Fleet, under ``run_test``) is fed job events
at a fixed rate from a socket (``floodserver`` in paced mode, a separate process). Each event
carries its send time (CLOCK_MONOTONIC, shared by both processes); its latency is the time from
being sent to the first frame whose drawn store generation includes it (``FrameRecorder``).
Lost = events sent minus events that reached the store, and minus events written to the log.

table_update: a nodes table of 5,000 bitmap rows (1,250 nodes × 4) in the dashboard; 1 % of the
bitmaps change their dirty count; the dashboard's diff path (``NodesTable.show`` →
``DiffTable.sync_rows``) vs clearing the table and adding every row again; each timed until the
next frame is produced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import CpuWindow, emit, histogram, median, percentile, r
from benchmarks.frames import FrameRecorder
from benchmarks.servers import server_process
from tui.core.model.state import Bitmap, ConnectionModel, LinkState, Node
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet

SIZE = (120, 40)
# ui_latency runs at both: the narrow layout stacks the panels, the wide one puts them side by side.
SIZES = ((120, 40), (80, 24))


async def _until(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _time_calls(obj: Any, method: str) -> list[float]:
    """Wrap ``obj.method`` (an instance attribute shadows the class's) and collect call times."""
    times: list[float] = []
    original = getattr(obj, method)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times.append((time.perf_counter() - t0) * 1000)

    setattr(obj, method, timed)
    return times


async def ui_latency(sock: str, rate: float, seconds: float,
                     sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, Any]:
    """One run per terminal size; the headline figures are the worst size's (p99, max) or the
    sum (lost), every per-size figure is under ``by_size``."""
    runs = [await _ui_latency_at(sock, rate, seconds, size) for size in sizes]
    worst = max(runs, key=lambda run: run["p99_ms"])
    every = [lat for run in runs for lat in run.pop("latencies")]
    out = dict(worst)
    out.update({
        "p50_ms": r(percentile(every, 50), 1),
        "p99_ms": max(run["p99_ms"] for run in runs),
        "max_ms": max(run["max_ms"] for run in runs),
        "p99_after_1s_ms": max(run["p99_after_1s_ms"] or 0 for run in runs) or None,
        "events": sum(run["events"] for run in runs),
        "lost": sum(run["lost"] for run in runs),
        "lost_in_log": sum(run["lost_in_log"] for run in runs),
        "histogram": histogram(every),
        "size": " and ".join(run["size"] for run in runs),
        "by_size": {run["size"]: {k: run[k] for k in ("p50_ms", "p99_ms", "max_ms", "p99_after_1s_ms",
                                                       "lost", "fps", "layouts")} for run in runs},
    })
    return out


async def _ui_latency_at(sock: str, rate: float, seconds: float,
                         size: tuple[int, int]) -> dict[str, Any]:
    from tui.session import ConsoleContext
    from tui.ui.app import BitmapTuiApp
    from tui.ui.messages import StateRendered

    fleet = Fleet(reconnect=False, connect_timeout=30)
    conn = fleet.add(Endpoint("vm", parse_address(f"unix:{sock}")))
    store = fleet.store
    app = BitmapTuiApp(ConsoleContext.of_fleet(fleet))
    count = int(rate * seconds)
    arrivals: list[tuple[int, float]] = []  # (store generation that includes it, sent at)
    frames: list[tuple[float, int]] = []  # (produced at, generation drawn)
    rendered = [-1]  # the newest store generation the dashboard drew (its StateRendered)

    def hook(message: Any) -> None:
        if isinstance(message, StateRendered):
            rendered[0] = max(rendered[0], message.generation)

    async with app.run_test(size=size, message_hook=hook):
        await _until(lambda: conn.connected and store.connection("vm").synced, 60, "connect")
        original = store.apply_events

        def apply_events(name: str, events: Any) -> None:
            events = list(events)
            original(name, events)
            for event in events:  # a batch: every event of it is in this generation
                data = event.get("data")
                sent = data.get("bench-sent") if isinstance(data, dict) else None
                if isinstance(sent, float):
                    arrivals.append((store.generation, sent))

        store.apply_events = apply_events  # type: ignore[method-assign]
        FrameRecorder(app, lambda t: frames.append((t, rendered[0])))
        # Where a frame's time goes: the dashboard's state → widgets step, and the compositor
        # (widgets → screen update → terminal text).
        render_ms = _time_calls(app.dashboard, "render_state")
        compose_ms = _time_calls(app.dashboard, "_compositor_refresh")
        layout_ms = _time_calls(app.dashboard, "_refresh_layout")
        # Full (generation 2) garbage collections stop the app while they walk every tracked
        # object, and the retained event history grows during the run: time each one.
        gc_full_ms: list[float] = []
        gc_start: list[float] = []

        def gc_watch(phase: str, info: dict[str, int]) -> None:
            if info.get("generation") != 2:
                return
            if phase == "start":
                gc_start[:] = [time.perf_counter()]
            elif gc_start:
                gc_full_ms.append((time.perf_counter() - gc_start[0]) * 1000)

        gc.callbacks.append(gc_watch)
        started = time.monotonic()
        cpu = CpuWindow().start()
        await conn.execute("query-flood", {"count": count, "rate": rate})
        await _until(lambda: len(arrivals) >= count, seconds * 4 + 30, "all events")
        await _until(lambda: rendered[0] >= arrivals[-1][0], 60, "last render")
        # A render that changed nothing visible produces no frame; give one a moment.
        with contextlib.suppress(TimeoutError):
            await _until(lambda: bool(frames) and frames[-1][1] >= arrivals[-1][0], 1, "frame")
        elapsed = time.monotonic() - started
        gc.callbacks.remove(gc_watch)
        end_render = time.monotonic()
        cpu_pct = cpu.percent()
        waiting = cpu.waiting_percent()
        log_lines = app.dashboard.event_log.shown
        store.apply_events = original  # type: ignore[method-assign]
    await fleet.stop()
    latencies: list[float] = []
    fi = 0
    for gen, sent in arrivals:
        while fi < len(frames) and frames[fi][1] < gen:
            fi += 1
        if fi < len(frames):
            latencies.append((frames[fi][0] - sent) * 1000)
        else:  # drawn by a render after which nothing on screen needed repainting
            latencies.append((end_render - sent) * 1000)
    # The flood's first second includes the app's warm-up (first frames of a growing log);
    # the figure without it shows the steady state.
    steady = [lat for (_, sent), lat in zip(arrivals, latencies, strict=True)
              if arrivals and sent - arrivals[0][1] >= 1.0]
    return {
        "rate": rate,
        "events": count,
        "p50_ms": r(percentile(latencies, 50), 1),
        "p99_ms": r(percentile(latencies, 99), 1),
        "max_ms": r(max(latencies), 1) if latencies else None,
        "p99_after_1s_ms": r(percentile(steady, 99), 1) if steady else None,
        "lost": count - len(arrivals),
        "lost_in_log": count - log_lines,
        "frames": len(frames),
        "gc_full": len(gc_full_ms),
        "gc_full_ms_max": r(max(gc_full_ms), 1) if gc_full_ms else None,
        # The app process's CPU over the run (% of one core): above ~100 it cannot keep up at
        # any machine load; well below, latency is the machine's load and the frame pacing.
        "cpu_pct": r(cpu_pct, 1),
        # Time the app was ready to run but the machine gave it no CPU (other processes).
        "cpu_wait_pct": r(waiting, 1) if waiting is not None else None,
        "render_state_ms_p50": r(median(render_ms), 1) if render_ms else None,
        "render_state_ms_p90": r(percentile(render_ms, 90), 1) if render_ms else None,
        "compositor_ms_p50": r(median(compose_ms), 1) if compose_ms else None,
        "compositor_ms_p90": r(percentile(compose_ms, 90), 1) if compose_ms else None,
        # Full screen re-layouts (a widget's size changed): each reflows every widget.
        "layouts": len(layout_ms),
        "layout_ms_p50": r(median(layout_ms), 1) if layout_ms else None,
        "fps": r(len(frames) / elapsed, 1),
        "latencies": latencies,
        "size": f"{size[0]}x{size[1]}",
    }


def big_connection(nodes: int, bitmaps: int) -> ConnectionModel:
    out: dict[str, Node] = {}
    for j in range(nodes):
        bms = tuple(Bitmap(name=f"bitmap{k}", granularity=65536, count=(j * 7919 + k) * 65536,
                           recording=k != 3, busy=False, persistent=True) for k in range(bitmaps))
        name = f"disk{j:05d}"
        out[name] = Node(node_name=name, driver="qcow2", file=f"/images/{name}.qcow2",
                         size=64 << 30, device=f"drive{j}", bitmaps=bms)
    return ConnectionModel(name="vm", address="unix:/vm.qmp", state=LinkState.CONNECTED,
                           nodes=out, synced=True)


def change_some(conn: ConnectionModel, changed: int, rng: random.Random) -> ConnectionModel:
    """A new state in which ``changed`` bitmaps (spread over the nodes) have a new dirty count."""
    pairs = [(n, k) for n in conn.nodes for k in range(len(conn.nodes[n].bitmaps))]
    nodes = dict(conn.nodes)
    for n, k in rng.sample(pairs, changed):
        node = nodes[n]
        bms = list(node.bitmaps)
        # A count that shows differently (the table prints human units to one decimal).
        bms[k] = replace(bms[k], count=rng.randrange(1 << 20, 64 << 30, 65536))
        nodes[n] = replace(node, bitmaps=tuple(bms))
    return replace(conn, nodes=nodes)


async def table_update(nodes: int, bitmaps: int, rounds: int) -> dict[str, Any]:
    from tui.core.model.store import Store
    from tui.session import ConsoleContext
    from tui.ui.app import BitmapTuiApp

    app = BitmapTuiApp(ConsoleContext(store=Store()))
    rng = random.Random(7)
    conn = big_connection(nodes, bitmaps)
    rows = nodes * bitmaps
    changed = max(1, rows // 100)
    waiter: list[asyncio.Future[float]] = []

    def frame(t: float) -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(t)

    async def timed(op: Any) -> tuple[float, float]:
        fut = asyncio.get_running_loop().create_future()
        waiter[:] = [fut]
        t0 = time.monotonic()
        op()
        t1 = time.monotonic()
        t2 = await asyncio.wait_for(fut, 30)
        return (t1 - t0) * 1000, (t2 - t0) * 1000

    diff_op: list[float] = []
    diff_frame: list[float] = []
    rebuild_op: list[float] = []
    rebuild_frame: list[float] = []
    async with app.run_test(size=SIZE) as pilot:

        async def settle() -> None:
            # Let deferred work (layout, dimension updates) finish so it is not billed to the
            # next measurement.
            for _ in range(3):
                await pilot.pause()
                await asyncio.sleep(0.05)

        table = app.dashboard.nodes_table
        FrameRecorder(app, frame)
        table.show([conn], multi=False)
        await settle()
        for _ in range(rounds):
            conn = change_some(conn, changed, rng)
            current = conn
            op, full = await timed(lambda c=current: table.show([c], multi=False))
            diff_op.append(op)
            diff_frame.append(full)
            writes = table.last_changes

            def rebuild(c: ConnectionModel = current) -> None:
                table.reset()  # forget every row (and every cached one): format and add all
                table.show([c], multi=False)

            op, full = await timed(rebuild)
            rebuild_op.append(op)
            rebuild_frame.append(full)
            await settle()
    ms, rebuild_ms = median(diff_frame), median(rebuild_frame)
    return {
        "rows": rows,
        "table_rows": rows + nodes,
        "changed": changed,
        "ms": r(ms, 2),
        "rebuild_ms": r(rebuild_ms, 2),
        "ratio": r(rebuild_ms / ms, 1),
        "op_ms": r(median(diff_op), 2),
        "rebuild_op_ms": r(median(rebuild_op), 2),
        "cells_written": writes,
        "rounds": rounds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["ui_latency", "table_update"])
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--nodes", type=int, default=1250)
    p.add_argument("--bitmaps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    if a.which == "table_update":
        emit(asyncio.run(table_update(a.nodes, a.bitmaps, a.rounds)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        sock = str(Path(tmp) / "flood.sock")
        with server_process("floodserver", sock):
            emit(asyncio.run(ui_latency(sock, a.rate, a.seconds)))


if __name__ == "__main__":
    main()
