"""Helpers shared by the benchmarks: CPU/RSS accounting, medians, result output."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "


class QuietBareClient(QMPClient):
    """The baseline client: qemu.qmp's, minus the ``str(msg)`` its message hooks build for every
    message before ``logger.debug`` drops it (the one fix any careful user would make). Events
    still go through its stock listener."""

    def _cb_inbound(self, msg: Any) -> Any:
        return msg

    def _cb_outbound(self, msg: Any) -> Any:
        return msg


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_now_mb() -> float:
    """Current resident set size, from /proc (falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def runqueue_wait_seconds() -> float | None:
    """Time this process's main thread has spent runnable but waiting for a CPU (Linux
    schedstat); None where the kernel does not report it."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class CpuWindow:
    """CPU used by this process over a wall-clock window, in percent of one core."""

    wall0: float = 0.0
    cpu0: float = 0.0
    wait0: float | None = None

    def start(self) -> CpuWindow:
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        self.wait0 = runqueue_wait_seconds()
        return self

    def waiting_percent(self) -> float | None:
        """Share of the window the main thread was ready to run but had no CPU (machine load)."""
        now = runqueue_wait_seconds()
        wall = time.perf_counter() - self.wall0
        if now is None or self.wait0 is None or wall <= 0:
            return None
        return 100.0 * (now - self.wait0) / wall

    def percent(self) -> float:
        wall = time.perf_counter() - self.wall0
        return 100.0 * (cpu_seconds() - self.cpu0) / wall if wall > 0 else 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return float(ordered[k])


# Upper bin edges (ms) of the latency histograms in RESULTS.md; the last bin is open.
HISTOGRAM_EDGES_MS = (5, 10, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000)


def histogram(values_ms: Sequence[float]) -> list[list[Any]]:
    """``[[label, count], ...]`` of latencies over :data:`HISTOGRAM_EDGES_MS` (empty bins kept, so
    the shape is comparable between runs)."""
    counts = [0] * (len(HISTOGRAM_EDGES_MS) + 1)
    for v in values_ms:
        i = 0
        while i < len(HISTOGRAM_EDGES_MS) and v >= HISTOGRAM_EDGES_MS[i]:
            i += 1
        counts[i] += 1
    edges = HISTOGRAM_EDGES_MS
    labels = ([f"< {edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)]
              + [f">= {edges[-1]}"])
    return [[label, n] for label, n in zip(labels, counts, strict=True)]


def cpu_wait_pct() -> float | None:
    """How much of the time this process wanted a CPU it spent waiting for one (the kernel's
    run-queue delay against the time it ran, for the main thread; None where not reported)."""
    try:
        ran, waited = (int(x) for x in open("/proc/self/schedstat").read().split()[:2])
    except (OSError, ValueError):
        return None
    return round(100 * waited / (ran + waited), 2) if ran + waited else 0.0


def emit(result: dict[str, Any]) -> None:
    """Hand one benchmark's result to run.py (the last line of stdout that has the prefix),
    with how long the process waited for a CPU (a result that carries the figure of the process
    that ran the app, e.g. a side of bench_fleet, keeps it)."""
    result.setdefault("cpu_wait_pct", cpu_wait_pct())
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


class JSONStream:
    """Splits a byte stream into JSON objects. qemu.qmp sends messages back to back with no
    newline (QEMU's parser needs none), so a server cannot use ``readline``."""

    def __init__(self) -> None:
        self._buf = ""
        self._dec = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data.decode()
        out: list[Any] = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return out
            try:
                obj, end = self._dec.raw_decode(text)
            except ValueError:
                self._buf = text
                return out
            out.append(obj)
            self._buf = text[end:]
