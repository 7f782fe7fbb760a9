"""A benchmark measured on a machine too busy for its figures is reported as noisy: neither met
nor missed."""

from __future__ import annotations

import sys

from tests.kit.common import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_wait_pct  # noqa: E402
from benchmarks.report import _met  # noqa: E402
from benchmarks.run import evaluate, noise  # noqa: E402

QUIET = {"p99_ms": 60.0, "lost": 0, "lost_in_log": 0, "load_1m_after": 0.8, "cpu_wait_pct": 1.0}


def test_quiet_figures_are_judged() -> None:
    assert noise(QUIET, cores=2) is None
    assert evaluate({"ui_latency": QUIET}, cores=2)["ui_latency"]["met"] is False


def test_a_load_past_the_cores_is_noisy() -> None:
    busy = {**QUIET, "load_1m_after": 3.4}
    assert noise(busy, cores=2) == "load 3.4 > 2 cores"
    target = evaluate({"ui_latency": busy}, cores=2)["ui_latency"]
    assert target["met"] is None and target["noisy"] == "load 3.4 > 2 cores"
    assert _met({"targets": {"ui_latency": target}}, "ui_latency").startswith("noisy (load 3.4")


def test_an_app_that_waited_for_a_cpu_is_noisy() -> None:
    waited = {**QUIET, "cpu_wait_pct": 7.5}
    assert noise(waited, cores=2) == "the app waited for a CPU 7.5 % of the time"
    assert evaluate({"ui_latency": waited}, cores=2)["ui_latency"]["met"] is None


def test_this_process_reports_its_cpu_wait() -> None:
    wait = cpu_wait_pct()
    assert wait is not None and 0.0 <= wait <= 100.0
