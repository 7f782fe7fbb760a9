"""service: what ``bitmap-tui serve`` costs a client, against the same client connected
directly, measured in the same run.

- events: a client draining an event flood (``floodserver``, its own process) through the
  service vs directly from the flood server (events per second, medians of alternating rounds);
- round trip: ``query-status`` on a real QEMU through the service vs on a second monitor of the
  same QEMU (p50 and p99 of each call).
The client is qemu.qmp's (without its eager debug formatting, as the app's); the service is the
real ``bitmap-tui serve`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from benchmarks.bench_events import bare_run
from benchmarks.common import QuietBareClient, emit, median, percentile, r
from benchmarks.servers import server_process
from tui.demo.sandbox import Sandbox

EXE = Path(sys.executable).parent / "bitmap-tui"


@contextlib.contextmanager
def service(workdir: Path, connections: dict[str, str]) -> Iterator[Path]:
    """``bitmap-tui serve`` on ``connections``; yields its socket directory once it serves."""
    sockets = workdir / "run"
    config = workdir / "serve.yaml"
    config.write_text(yaml.safe_dump({"connections": connections, "service": {
        "socket_dir": str(sockets), "audit_log": str(workdir / "audit.jsonl")}}))
    log = (workdir / "serve.log").open("w+")
    proc = subprocess.Popen([str(EXE), "serve", "--config", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while log.seek(0) is not None and log.read().count("connected to QEMU") < len(connections):
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError("bitmap-tui serve did not connect")
            time.sleep(0.05)
        yield sockets
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()


async def round_trips(sock: str, calls: int) -> list[float]:
    client = QuietBareClient("bench")
    await client.connect(sock)
    try:
        for _ in range(50):  # warm up
            await client.execute("query-status")
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await client.execute("query-status")
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        await client.disconnect()


async def measure(events: int, calls: int, rounds: int, workdir: Path) -> dict[str, object]:
    flood_sock = str(workdir / "flood.sock")
    direct_ev: list[float] = []
    served_ev: list[float] = []
    with server_process("floodserver", flood_sock), \
            service(workdir / "flood", {"flood": f"unix:{flood_sock}"}) as sockets:
        for _ in range(rounds):
            direct_ev.append(await bare_run(flood_sock, events, QuietBareClient))
            served_ev.append(await bare_run(str(sockets / "flood.qmp"), events, QuietBareClient))
    second = workdir / "qemu" / "bench.sock"
    async with Sandbox(drives=1, workdir=workdir / "qemu",
                       extra_args=["-qmp", f"unix:{second},server=on,wait=off"]) as sb:
        with service(workdir / "rtt", {"vm": sb.address}) as sockets:
            direct_rt: list[float] = []
            served_rt: list[float] = []
            for _ in range(rounds):
                direct_rt += await round_trips(str(second), calls)
                served_rt += await round_trips(str(sockets / "vm.qmp"), calls)
    return {
        "events": events, "calls": calls, "rounds": rounds,
        "direct_eps": r(median(direct_ev), 0), "service_eps": r(median(served_ev), 0),
        "events_ratio": r(median(served_ev) / median(direct_ev), 3),
        "direct_p50_ms": r(percentile(direct_rt, 50), 3),
        "service_p50_ms": r(percentile(served_rt, 50), 3),
        "added_p50_ms": r(percentile(served_rt, 50) - percentile(direct_rt, 50), 3),
        "direct_p99_ms": r(percentile(direct_rt, 99), 3),
        "service_p99_ms": r(percentile(served_rt, 99), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-svc-") as tmp:
        work = Path(tmp)
        for sub in ("flood", "rtt", "qemu"):
            (work / sub).mkdir()
        emit(asyncio.run(measure(args.events, args.calls, args.rounds, work)))


if __name__ == "__main__":
    main()
