"""startup: the installed console script to its first frame (headless), vs ``import textual``.

The app runs as an operator starts it (``bitmap-tui --connect unix:SOCK``, against an idle fake
QEMU) with ``TEXTUAL_DRIVER`` set to :class:`benchmarks.frames.FirstFrameDriver`: no terminal,
but frames are still rendered to text, and the first one is reported on stderr. The baseline is
``python -c "import textual"`` from process start to exit. Runs alternate; medians are compared.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, emit, median, r
from benchmarks.servers import server_process


def console_script() -> str:
    path = Path(sys.executable).parent / "bitmap-tui"
    if not path.exists():
        raise RuntimeError(f"{path} not found: install the package first (README set-up)")
    return str(path)


def app_once(sock: str) -> float:
    env = dict(os.environ, TEXTUAL_DRIVER="benchmarks.frames:FirstFrameDriver",
               PYTHONPATH=str(ROOT), COLUMNS="80", LINES="24")
    t0 = time.monotonic()
    proc = subprocess.Popen([console_script(), "--connect", f"unix:{sock}"], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("FIRST-FRAME "):
                return float(line.split()[1]) - t0
        raise RuntimeError(f"bitmap-tui exited ({proc.wait()}) without drawing a frame")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def baseline_once() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import textual"], check=True, cwd=ROOT)
    return time.monotonic() - t0


def measure(sock: str, runs: int, warm_up: bool = True) -> dict[str, Any]:
    app: list[float] = []
    base: list[float] = []
    if warm_up:
        app_once(sock)  # warm the page cache; not counted
    for _ in range(runs):
        base.append(baseline_once())
        app.append(app_once(sock))
    app_s, base_s = median(app), median(base)
    return {"app_s": r(app_s, 3), "baseline_s": r(base_s, 3), "ratio": r(app_s / base_s, 2),
            "runs": runs, "app_runs_s": [r(x, 3) for x in app],
            "baseline_runs_s": [r(x, 3) for x in base]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-warm-up", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        sock = str(Path(tmp) / "idle.sock")
        with server_process("floodserver", sock):
            emit(measure(sock, a.runs, warm_up=not a.no_warm_up))


if __name__ == "__main__":
    main()
