"""Run every benchmark beside its baseline and write ``benchmarks/RESULTS.md``.

    python benchmarks/run.py [--quick] [--json]

Each benchmark runs in a fresh process (``python -m benchmarks.bench_*``) so one's memory and CPU
never count against another; servers that feed them run in processes of their own. Not part of
CI: timings depend on the machine and its load, so they are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "BENCH-RESULT "

# Arguments per mode. "tiny" is for the harness's own unit test: everything, minimally.
PLANS: dict[str, dict[str, list[str]]] = {
    "full": {
        "event_pipeline": ["bench_events", "--events", "50000", "--rounds", "5"],
        "ui_latency": ["bench_ui", "ui_latency", "--rate", "2000", "--seconds", "10"],
        "fleet": ["bench_fleet", "--idle", "30", "--rounds", "3", "--extra"],
        "startup": ["bench_startup", "--runs", "5"],
        "table_update": ["bench_ui", "table_update", "--rounds", "5"],
        "key_latency": ["bench_keys", "--fakes", "200", "--qemus", "10", "--rounds", "10"],
        "status_fleet": ["bench_status", "--fakes", "200", "--qemus", "10", "--rounds", "5"],
        "backup_overhead": ["bench_backup", "--size", "1G", "--rounds", "5"],
    },
    "quick": {
        "event_pipeline": ["bench_events", "--events", "30000", "--rounds", "3"],
        "ui_latency": ["bench_ui", "ui_latency", "--rate", "2000", "--seconds", "2"],
        "fleet": ["bench_fleet", "--idle", "10", "--rounds", "1", "--settle", "0.5"],
        "startup": ["bench_startup", "--runs", "5", "--no-warm-up"],
        "table_update": ["bench_ui", "table_update", "--rounds", "1"],
        "key_latency": ["bench_keys", "--fakes", "200", "--qemus", "10", "--rounds", "4"],
        "status_fleet": ["bench_status", "--fakes", "200", "--qemus", "2", "--rounds", "3"],
        "backup_overhead": ["bench_backup", "--size", "512M", "--rounds", "3"],
    },
    "tiny": {
        "event_pipeline": ["bench_events", "--events", "300", "--rounds", "1"],
        "ui_latency": ["bench_ui", "ui_latency", "--rate", "200", "--seconds", "0.5"],
        "fleet": ["bench_fleet", "--fakes", "3", "--nodes", "2", "--bitmaps", "1", "--qemus",
                  "1", "--idle", "0.3", "--rounds", "1", "--settle", "0.1", "--interval", "0.5"],
        "startup": ["bench_startup", "--runs", "1", "--no-warm-up"],
        "table_update": ["bench_ui", "table_update", "--nodes", "25", "--bitmaps", "4",
                         "--rounds", "1"],
        "key_latency": ["bench_keys", "--fakes", "3", "--rounds", "1", "--gap", "0.02"],
        "status_fleet": ["bench_status", "--fakes", "3", "--qemus", "1", "--rounds", "1"],
        "backup_overhead": ["bench_backup", "--size", "16M", "--rounds", "1"],
    },
}

# key → (description, check(result) → bool or None when not measurable)
TARGETS: dict[str, tuple[str, Any]] = {
    # The baseline is the quiet bare client (qemu.qmp without its per-message debug formatting,
    # as the app's own client): the best a user could write with the same library.
    "event_pipeline": ("app_eps / bare_quiet_eps >= 0.8", lambda v: v["ratio_vs_quiet"] >= 0.8),
    "ui_latency": ("p99 <= 50 ms and lost = 0",
                   lambda v: v["p99_ms"] <= 50 and v["lost"] == 0 and v["lost_in_log"] == 0),
    "fleet": ("idle CPU <= 2 % of a core, RSS <= 150 MB, refresh <= 1.5x bare",
              lambda v: v["idle_cpu_pct"] <= 2 and v["rss_mb"] <= 150
              and v["refresh_ratio"] <= 1.5),
    "startup": ("app_s <= 1.0", lambda v: v["app_s"] <= 1.0),
    "table_update": ("diff >= 20x faster than rebuild", lambda v: v["ratio"] >= 20),
    "key_latency": ("p99 <= 50 ms", lambda v: v["p99_ms"] <= 50),
    "status_fleet": ("app_s / baseline_s <= 1.2", lambda v: v["ratio"] <= 1.2),
    "backup_overhead": ("app_s / baseline_s <= 1.05", lambda v: v["ratio"] <= 1.05),
}


def _ensure_environment() -> None:
    """Re-run under the project's virtualenv when started with a Python that lacks the app."""
    try:
        import qemu.qmp  # noqa: F401
        import textual  # noqa: F401

        import tui  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv" / "bin" / "python"
        if venv.exists() and Path(sys.executable).resolve() != venv.resolve():
            os.execv(str(venv), [str(venv), *sys.argv])
        raise SystemExit("run the README's set-up first (./dev test creates .venv)") from None


def run_one(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark module in its own process and return its result (or the error)."""
    module, *args = argv
    t0 = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["load_1m_after"] = round(os.getloadavg()[0], 2)
    return result


# Figures measured while the machine was busier than this are not evidence either way.
MAX_CPU_WAIT_PCT = 5.0


def noise(value: dict[str, Any], cores: int) -> str | None:
    """Why a benchmark's figures are not to be believed (None: they are): the load average rose
    past the machine's cores, or the app waited for a CPU more than MAX_CPU_WAIT_PCT % of the
    time it wanted one."""
    load = value.get("load_1m_after")
    if isinstance(load, int | float) and load > cores:
        return f"load {load:g} > {cores} cores"
    wait = value.get("cpu_wait_pct")
    if isinstance(wait, int | float) and wait > MAX_CPU_WAIT_PCT:
        return f"the app waited for a CPU {wait:g} % of the time"
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions: dict[str, str] = {}
    for dist in ("textual", "qemu.qmp"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "?"
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        qemu = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), **versions, "qemu": qemu,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def evaluate(results: dict[str, Any], cores: int | None = None) -> dict[str, Any]:
    """Each target: met, not met, or None (not measured, or ``noisy``: measured on a machine too
    busy for the figure to count either way)."""
    cores = cores or os.cpu_count() or 1
    out: dict[str, Any] = {}
    for key, (text, check) in TARGETS.items():
        value = results.get(key) or {}
        if "error" in value:
            out[key] = {"target": text, "met": None}
            continue
        why = noise(value, cores)
        if why is not None:
            out[key] = {"target": text, "met": None, "noisy": why}
            continue
        try:
            out[key] = {"target": text, "met": bool(check(value))}
        except (KeyError, TypeError):
            out[key] = {"target": text, "met": None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs, about a minute")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", action="append", choices=list(PLANS["full"]),
                   help="run only this benchmark (repeatable)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"),
                   help="where to write the report ('-' for nowhere)")
    args = p.parse_args(argv)
    _ensure_environment()
    from benchmarks.report import write_report

    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    command = "python benchmarks/run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.UTC)
    info = machine()
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    for name, plan in PLANS[mode].items():
        if args.only and name not in args.only:
            continue
        if not args.json:
            print(f"{name} ...", end=" ", flush=True)
        results[name] = run_one(name, plan, timeout=900)
        if not args.json:
            print("error: " + results[name]["error"] if "error" in results[name]
                  else f"done ({results[name]['wall_s']} s)", flush=True)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc: dict[str, Any] = dict(results)
    doc["targets"] = evaluate(results)
    doc["run"] = {"mode": mode, "date": started.isoformat(timespec="seconds"),
                  "command": command, "seconds": round(time.monotonic() - t0, 1),
                  "machine": info, "argv": shlex.join([sys.executable, *sys.argv])}
    if args.results != "-":
        Path(args.results).write_text(write_report(doc))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for name, t in doc["targets"].items():
            state = ("noisy: " + t["noisy"] if "noisy" in t else
                     {True: "met", False: "NOT met", None: "not measured"}[t["met"]])
            print(f"  {name:15} {state:13} ({t['target']})")
        if args.results != "-":
            print(f"report: {args.results}")
    return 1 if any("error" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
