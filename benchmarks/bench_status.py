"""status_fleet: ``bitmap-tui status --json`` over many connections vs a bare qemu.qmp script.

``fakefleet`` (a separate process) serves fake QMP servers and owns the real QEMUs. Both sides
are timed as whole processes, from start to exit, alternating (app, bare, bare quiet, app, ...):
- app: the installed console script, ``bitmap-tui status --json --connect NAME=unix:SOCK ...``
  (a fresh, empty config and state directory);
- bare: ``benchmarks/bare_status.py status`` with stock qemu.qmp clients, connecting to every
  socket at once and sending the same probe (see its docstring), printing the replies as JSON;
- bare quiet: the same without qemu.qmp's per-message debug formatting (the app's client skips
  it too). ``ratio`` is app / bare quiet, the stricter of the two.
Start-up alone is timed too: ``bitmap-tui status --help`` and ``python -c "import qemu.qmp"``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, median, r
from benchmarks.servers import server_process


def console_script() -> str:
    """The installed ``bitmap-tui`` next to this interpreter."""
    path = Path(sys.executable).parent / "bitmap-tui"
    if not path.exists():
        raise SystemExit(f"{path} not found: install the project (pip install -e .)")
    return str(path)


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         check=False, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exit {out.returncode}: {out.stderr.strip()[-500:]}")
    return wall, out.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fakes", type=int, default=200)
    p.add_argument("--qemus", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        env = dict(os.environ, XDG_CONFIG_HOME=f"{tmp}/config", XDG_STATE_HOME=f"{tmp}/state")
        with server_process("fakefleet", tmp, str(a.fakes), "8", "4", str(a.qemus)) as server:
            payload = json.loads(server.payload)
            targets: list[str] = payload["fake"] + payload["qemu"]
            targets_file = Path(tmp) / "targets.json"
            targets_file.write_text(json.dumps(targets))
            app_argv = [console_script(), "status", "--json", "--timeout", "60"]
            for i, t in enumerate(targets):
                app_argv += ["--connect", f"c{i}=unix:{t}"]
            bare_argv = [sys.executable, "-m", "benchmarks.bare_status", "status", str(targets_file)]
            app: list[float] = []
            bare: list[float] = []
            quiet: list[float] = []
            # Start-up alone (interpreter, imports, argument parsing), to tell it from the rest.
            app_start: list[float] = []
            bare_start: list[float] = []
            for _ in range(a.rounds):
                app_start.append(timed_run([console_script(), "status", "--help"], env)[0])
                bare_start.append(timed_run([sys.executable, "-c", "import qemu.qmp"], env)[0])
                wall, out = timed_run(app_argv, env)
                conns = json.loads(out)["connections"]
                if len(conns) != len(targets) or any(c["state"] != "connected" for c in conns):
                    raise RuntimeError("the app's status did not reach every connection")
                app.append(wall)
                wall, out = timed_run(bare_argv, env)
                if len(json.loads(out)) != len(targets):
                    raise RuntimeError("the bare script did not reach every connection")
                bare.append(wall)
                quiet.append(timed_run([*bare_argv, "--quiet"], env)[0])
    app_s, bare_s, quiet_s = median(app), median(bare), median(quiet)
    emit({
        "connections": len(targets),
        "fake_servers": a.fakes,
        "real_qemus": a.qemus,
        "app_s": r(app_s, 3),
        "baseline_s": r(quiet_s, 3),
        "ratio": r(app_s / quiet_s, 3),
        "baseline_stock_s": r(bare_s, 3),
        "ratio_vs_stock": r(app_s / bare_s, 3),
        "app_startup_s": r(median(app_start), 3),
        "baseline_startup_s": r(median(bare_start), 3),
        "app_runs_s": [r(x, 3) for x in app],
        "baseline_runs_s": [r(x, 3) for x in quiet],
        "rounds": a.rounds,
    })


if __name__ == "__main__":
    main()
