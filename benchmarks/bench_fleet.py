"""fleet: many connections × nodes × bitmaps; one full refresh, idle CPU, peak RSS; vs bare clients.

``fakefleet`` (a separate process) serves the fake QMP servers and owns the real QEMUs. Each side
then runs in a fresh process of its own, so CPU and peak RSS are that side's alone:
- bare: one stock ``qemu.qmp`` QMPClient per connection issuing the same queries as the app
  (refresh: query-named-block-nodes, query-block, query-jobs, query-block-jobs; idle: the first
  two every refresh interval, which is what the app's poll loop sends when no job runs);
- app: :class:`tui.core.qmp.fleet.Fleet` at the default refresh interval, into one Store, with the
  connections marked on screen as the dashboard marks them when it shows one connection (the
  default view): that one at the refresh interval, the others polled less often
  (``Connection.set_on_screen``). ``--all-on-screen`` measures every connection at full rate
  (the dashboard's "all connections" view).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from benchmarks.common import (
    RESULT_PREFIX,
    ROOT,
    CpuWindow,
    QuietBareClient,
    emit,
    median,
    peak_rss_mb,
    r,
)
from benchmarks.servers import server_process
from tui.core.base.heap import settle_heap
from tui.core.model.state import LinkState
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet

REFRESH = ("query-named-block-nodes", "query-block", "query-jobs", "query-block-jobs")
IDLE_POLL = ("query-named-block-nodes", "query-block")


async def _timed(coro_factory: Any, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await coro_factory()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _idle(seconds: float) -> float:
    cpu = CpuWindow().start()
    await asyncio.sleep(seconds)
    return cpu.percent()


async def bare_side(
    targets: list[str], rounds: int, idle_s: float, interval: float, settle: float,
    quiet: bool = False,
) -> dict[str, Any]:
    cls = QuietBareClient if quiet else QMPClient
    clients = [cls(f"bare{i}") for i in range(len(targets))]
    await asyncio.gather(*(c.connect(t) for c, t in zip(clients, targets, strict=True)))

    async def refresh_one(c: QMPClient) -> None:
        for cmd in REFRESH:
            await c.execute(cmd)

    async def refresh_all() -> None:
        await asyncio.gather(*(refresh_one(c) for c in clients))

    await refresh_all()  # warm-up, like the app's initial sync
    times = await _timed(refresh_all, rounds)

    async def poll(c: QMPClient) -> None:
        while True:
            await asyncio.sleep(interval)
            for cmd in IDLE_POLL:
                await c.execute(cmd)

    pollers = [asyncio.create_task(poll(c)) for c in clients]
    await asyncio.sleep(settle)  # let the polling settle into its rhythm
    idle = await _idle(idle_s)
    for t in pollers:
        t.cancel()
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    return {"refresh_ms": r(median(times), 1), "refresh_runs_ms": [r(x, 1) for x in times],
            "idle_cpu_pct": r(idle, 2), "rss_mb": r(peak_rss_mb(), 1)}


async def app_side(
    targets: list[str], rounds: int, idle_s: float, interval: float, settle: float,
    all_on_screen: bool = False,
) -> dict[str, Any]:
    # A generous connect timeout: hundreds of simultaneous connects on a loaded 2-core box.
    fleet = Fleet(refresh_interval=interval, reconnect=False, connect_timeout=60, read_only=True)
    for i, t in enumerate(targets):
        fleet.add(Endpoint(f"c{i}", parse_address(f"unix:{t}")))
    fleet.start()
    await fleet.wait_first_answer(180)
    settle_heap()  # as Session.connect and the console do once the fleet synced
    conns = fleet.store.state.connections.values()
    bad = [c.name for c in conns if c.state is not LinkState.CONNECTED or not c.synced]
    if bad:
        raise RuntimeError(f"{len(bad)} connections did not sync: {bad[:5]}")

    async def refresh_all() -> None:
        await asyncio.gather(*(c.refresh() for c in fleet.connections.values()))

    times = await _timed(refresh_all, rounds)
    if not all_on_screen:
        for conn in list(fleet.connections.values())[1:]:
            conn.set_on_screen(False)
    await asyncio.sleep(settle)
    idle = await _idle(idle_s)
    state = fleet.store.state
    nodes = sum(len(c.nodes) for c in state.connections.values())
    bitmaps = sum(c.bitmap_count() for c in state.connections.values())
    await fleet.stop()
    return {"connections": len(state.connections), "nodes": nodes, "bitmaps": bitmaps,
            "refresh_ms": r(median(times), 1), "refresh_runs_ms": [r(x, 1) for x in times],
            "idle_cpu_pct": r(idle, 2), "rss_mb": r(peak_rss_mb(), 1)}


def _run_side(side: str, targets_file: Path, a: argparse.Namespace,
              interval: float | None = None, all_on_screen: bool = False) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_fleet", "--side", side, "--targets",
         str(targets_file), "--rounds", str(a.rounds), "--idle", str(a.idle),
         "--interval", str(interval or a.interval), "--settle", str(a.settle),
         *(["--all-on-screen"] if all_on_screen else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"fleet {side} side failed: {out.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX):])
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["app", "bare", "bare_quiet"])
    p.add_argument("--targets")
    p.add_argument("--fakes", type=int, default=200)
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--bitmaps", type=int, default=4)
    p.add_argument("--qemus", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--extra", action="store_true",
                   help="also measure a bare client without qemu.qmp's debug formatting, and the "
                   "app at --extra-interval")
    p.add_argument("--extra-interval", type=float, default=8.0)
    p.add_argument("--all-on-screen", action="store_true",
                   help="app side: every connection on screen (polled at the full rate)")
    a = p.parse_args()
    if a.side:
        targets = json.loads(Path(a.targets).read_text())
        if a.side == "app":
            emit(asyncio.run(app_side(targets, a.rounds, a.idle, a.interval, a.settle,
                                      a.all_on_screen)))
        else:
            quiet = a.side == "bare_quiet"
            emit(asyncio.run(bare_side(targets, a.rounds, a.idle, a.interval, a.settle, quiet)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        with server_process("fakefleet", tmp, str(a.fakes), str(a.nodes), str(a.bitmaps),
                            str(a.qemus)) as server:
            payload = json.loads(server.payload)
            targets_file = Path(tmp) / "targets.json"
            targets_file.write_text(json.dumps(payload["fake"] + payload["qemu"]))
            bare = _run_side("bare", targets_file, a)
            app = _run_side("app", targets_file, a)
            extra: dict[str, Any] = {}
            if a.extra:
                extra["bare_quiet"] = _run_side("bare_quiet", targets_file, a)
                slow = _run_side("app", targets_file, a, interval=a.extra_interval)
                extra["app_at_interval"] = {"interval_s": a.extra_interval,
                                            "idle_cpu_pct": slow["idle_cpu_pct"]}
                every = _run_side("app", targets_file, a, all_on_screen=True)
                extra["app_all_on_screen"] = {"idle_cpu_pct": every["idle_cpu_pct"]}
    result = dict(app)
    result.update(extra)
    result.update(
        fake_servers=a.fakes, real_qemus=a.qemus, refresh_interval_s=a.interval, idle_s=a.idle,
        bare=bare, refresh_ratio=r(app["refresh_ms"] / bare["refresh_ms"], 3),
    )
    emit(result)


if __name__ == "__main__":
    main()
