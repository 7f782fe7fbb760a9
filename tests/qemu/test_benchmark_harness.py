"""The benchmark harness runs end to end in a tiny configuration and reports every figure.

No timing is asserted (timings belong in benchmarks/RESULTS.md); this only proves that
``benchmarks/run.py --json`` works on this checkout and emits the keys issues 7 and 17 ask for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.common import ROOT, requires_qemu

KEYS = {
    "event_pipeline": {"app_eps", "bare_eps", "ratio"},
    "ui_latency": {"rate", "p50_ms", "p99_ms", "lost", "cpu_wait_pct", "load_1m_after"},
    "fleet": {"connections", "nodes", "bitmaps", "refresh_ms", "idle_cpu_pct", "rss_mb", "bare"},
    "startup": {"app_s", "baseline_s", "ratio"},
    "table_update": {"rows", "changed", "ms", "rebuild_ms", "ratio"},
    "key_latency": {"connections", "presses", "p50_ms", "p99_ms", "histogram"},
    "status_fleet": {"connections", "app_s", "baseline_s", "ratio"},
    "backup_overhead": {"size_mib", "app_s", "baseline_s", "ratio"},
}


@requires_qemu
def test_tiny_run_emits_every_key(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--json",
         "--results", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    doc = json.loads(out.stdout)
    for key, fields in KEYS.items():
        assert "error" not in doc[key], doc[key]
        assert fields <= set(doc[key]), (key, sorted(doc[key]))
        target = doc["targets"][key]
        # judged, or not judged because the machine was too busy (and the report says why)
        assert target["met"] in (True, False) or target.get("noisy"), target
    assert {"refresh_ms", "idle_cpu_pct", "rss_mb"} <= set(doc["fleet"]["bare"])
    # The fleet really connected and read nodes and bitmaps: 3 fakes × 2 nodes + 1 QEMU.
    assert doc["fleet"]["connections"] == 4
    assert doc["fleet"]["bitmaps"] > 0
    assert doc["ui_latency"]["lost"] == 0
    assert doc["event_pipeline"]["all_events_reached_store"] is True
    assert "ratio_vs_quiet" in doc["event_pipeline"]
    assert "bare_quiet_eps" in doc["targets"]["event_pipeline"]["target"]
    # Every key of every round was answered by a frame: 3 fakes + the flood connection.
    assert doc["key_latency"]["connections"] == 4
    assert doc["key_latency"]["timeouts"] == 0
    assert sum(n for _, n in doc["key_latency"]["histogram"]) == doc["key_latency"]["presses"]
    assert sum(n for _, n in doc["ui_latency"]["histogram"]) == doc["ui_latency"]["events"]
    # status reached every connection (3 fakes + 1 QEMU), on both sides.
    assert doc["status_fleet"]["connections"] == 4
    for key in ("status_fleet", "backup_overhead"):
        v = doc[key]
        # ratio = app / baseline (from the unrounded figures; tiny runs round coarsely)
        assert v["ratio"] == pytest.approx(v["app_s"] / v["baseline_s"], rel=0.25), (key, v)
    text = report.read_text()
    assert "Machine:" in text and "--tiny" in text
    for key in KEYS:
        assert f"`{key}`" in text
    # Both latency distributions are drawn, with the target line.
    assert "#### `ui_latency` distribution" in text
    assert "#### `key_latency` distribution" in text
    assert text.count("50 ms: the target wants 99 %") == 2
