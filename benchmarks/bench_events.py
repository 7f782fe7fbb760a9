"""event_pipeline: QMP events per second from a socket into the state model, vs a bare client.

Both sides drain the same flood (``floodserver``, a separate process) on a unix socket:
- bare: a ``qemu.qmp`` QMPClient iterating its ``events`` listener and counting;
- bare_quiet: the same with :class:`QuietBareClient` (qemu.qmp's client without its eager
  per-message debug formatting, the one fix any careful user would make);
- app: :class:`tui.core.qmp.connection.Connection` (its one event pump) → ``Store.apply_events`` (a batch at a time) →
  reducer, with one store listener standing in for the UI's change callback.
Runs alternate (bare, app, bare, app, ...) and the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from qemu.qmp import QMPClient

from benchmarks.common import QuietBareClient, emit, median, r
from benchmarks.servers import server_process
from tui.core.model.store import Store
from tui.core.qmp.address import parse_address
from tui.core.qmp.connection import Connection


async def bare_run(sock: str, count: int, client_class: type[QMPClient] = QMPClient) -> float:
    client = client_class("bare")
    await client.connect(sock)
    try:
        seen = 0
        t0 = time.perf_counter()
        await client.execute("query-flood", {"count": count})
        async for _event in client.events:
            seen += 1
            if seen >= count:
                break
        return count / (time.perf_counter() - t0)
    finally:
        await client.disconnect()


async def app_run(sock: str, count: int) -> tuple[float, int]:
    store = Store()
    conn = Connection("vm", parse_address(f"unix:{sock}"), store, reconnect=False)
    done = asyncio.get_running_loop().create_future()

    def changed() -> None:  # the UI's listener would do about this much per change
        if store.events_seen >= count and not done.done():
            done.set_result(time.perf_counter())

    store.subscribe(changed)
    conn.start()
    try:
        await asyncio.wait_for(conn.attempted.wait(), 30)
        if not conn.connected:
            raise RuntimeError(f"app connection failed: {conn.model.error}")
        t0 = time.perf_counter()
        await conn.execute("query-flood", {"count": count})
        t1 = await asyncio.wait_for(done, 300)
        return count / (t1 - t0), store.events_seen
    finally:
        await conn.stop()


async def measure(sock: str, count: int, rounds: int) -> dict[str, object]:
    bare: list[float] = []
    quiet: list[float] = []
    app: list[float] = []
    seen_ok = True
    for _ in range(rounds):
        bare.append(await bare_run(sock, count))
        quiet.append(await bare_run(sock, count, QuietBareClient))
        eps, seen = await app_run(sock, count)
        app.append(eps)
        seen_ok = seen_ok and seen == count
    app_eps, bare_eps = median(app), median(bare)
    return {
        "app_eps": r(app_eps, 0),
        "bare_eps": r(bare_eps, 0),
        "ratio": r(app_eps / bare_eps, 3),
        "events": count,
        "rounds": rounds,
        # The app's client skips qemu.qmp's eager debug formatting; against a bare client with
        # the same fix the ratio shows what the app's own layers (pump, store, reducer) cost.
        "bare_quiet_eps": r(median(quiet), 0),
        "ratio_vs_quiet": r(app_eps / median(quiet), 3),
        "app_runs": [r(x, 0) for x in app],
        "bare_runs": [r(x, 0) for x in bare],
        "all_events_reached_store": seen_ok,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ev-") as tmp:
        sock = str(Path(tmp) / "flood.sock")
        with server_process("floodserver", sock):
            emit(asyncio.run(measure(sock, args.events, args.rounds)))


if __name__ == "__main__":
    main()
