"""Render the benchmark results as ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import math
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _met(doc: dict[str, Any], key: str) -> str:
    t = doc["targets"].get(key, {})
    if "noisy" in t:  # the machine was too busy: neither met nor missed
        return f"noisy ({t['noisy']}): not judged"
    return {True: "**met**", False: "**NOT met**", None: "not measured"}[t.get("met")]


def _section(doc: dict[str, Any], key: str, title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    v = doc.get(key)
    out = [f"### `{key}` — {title}", ""]
    if v is None:
        return out + ["Not run.", ""]
    if "error" in v:
        return out + [f"Failed to run: `{v['error']}`", ""]
    out += [f"Target: {doc['targets'][key]['target']} — {_met(doc, key)}", "",
            "| figure | value | baseline / note |", "|---|---|---|"]
    for label, path, note in rows:
        cur: Any = v
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        out.append(f"| {label} | {_fmt(cur) if cur is not None else '—'} | {note} |")
    return out + [""]


def ascii_histogram(bins: list[list[Any]], width: int = 40, target_ms: int = 50) -> list[str]:
    """A latency histogram as a fenced text block: one bar per bin, scaled to the fullest bin,
    with a line where the target lies (bins are ``[label, count]``, as ``benchmarks.common``
    makes them)."""
    total = sum(n for _, n in bins)
    peak = max((n for _, n in bins), default=0)
    out = ["```", f"{'ms':>9} | count (share)"]
    for label, n in bins:
        bar = "#" * max(1, round(n / peak * width)) if n and peak else ""
        share = f"{100 * n / total:.1f} %" if total else "-"
        out.append(f"{label:>9} | {bar} {n} ({share})")
        if label.endswith(f"-{target_ms}"):
            out.append(f"{'':>9} +--- {target_ms} ms: the target wants 99 % of the samples "
                       "above this line")
    return out + ["```"]


def _histogram_section(doc: dict[str, Any], key: str, what: str) -> list[str]:
    v = doc.get(key) or {}
    if "error" in v or not v.get("histogram"):
        return []
    return [f"#### `{key}` distribution", "",
            f"{what} (p50 {_fmt(v['p50_ms'])} ms, p99 {_fmt(v['p99_ms'])} ms, "
            f"max {_fmt(v.get('max_ms', float('nan')))} ms):", "",
            *ascii_histogram(v["histogram"]), ""]


def explanations(doc: dict[str, Any]) -> list[str]:
    """Why a target is not met, from this run's own numbers, and what would meet it."""
    out: list[str] = []
    fleet = doc.get("fleet") or {}
    if doc["targets"].get("fleet", {}).get("met") is False and "error" not in fleet:
        bare = fleet.get("bare", {})
        quiet = fleet.get("bare_quiet", {})
        slow = fleet.get("app_at_interval", {})
        conns = fleet.get("connections", 0)
        interval = fleet.get("refresh_interval_s", 2.0)
        polls = conns / interval if interval else 0
        per_poll_ms = (fleet["idle_cpu_pct"] / 100 * 1000 / polls) if polls else 0
        # Idle cost scales with the poll rate: extrapolate from the slowest interval measured.
        base_pct, base_interval = fleet["idle_cpu_pct"], interval
        if slow:
            base_pct, base_interval = slow["idle_cpu_pct"], slow["interval_s"]
        needed = math.ceil(base_interval * base_pct / 2)
        text = (
            f"- **fleet idle CPU** ({_fmt(fleet['idle_cpu_pct'])} % of a core). Idle is not "
            f"free: at the default refresh of {_fmt(interval)} s the app polls {conns} "
            f"connections, {_fmt(polls)} node refreshes a second, each two QMP round trips "
            "(`query-named-block-nodes`, `query-block`) whose replies (about 9 KB each for 8 "
            f"nodes × 4 bitmaps) must be decoded: about {per_poll_ms:.2f} ms of CPU per "
            f"refresh. The bare qemu.qmp client sending the same queries used "
            f"{_fmt(bare.get('idle_cpu_pct', float('nan')))} %"
        )
        if quiet:
            text += (f", and even with qemu.qmp's per-message debug formatting switched off "
                     f"(as the app does) {_fmt(quiet['idle_cpu_pct'])} %")
        text += (": the target is below the cost of the queries themselves on this machine, "
                 "so no client-side tuning reaches it at this poll rate. What would meet it: "
                 "fewer idle queries, e.g. poll only the connection(s) on screen every "
                 f"{_fmt(interval)} s and the rest every {needed} s "
                 "or more (the connections table needs counts, not live dirty bytes), or "
                 "re-read `query-block` (device names) only when the node set changes.")
        if slow:
            text += (f" Measured: the same fleet polled every {_fmt(slow['interval_s'])} s idles "
                     f"at {_fmt(slow['idle_cpu_pct'])} %.")
        out.append(text)
    ui = doc.get("ui_latency") or {}
    if doc["targets"].get("ui_latency", {}).get("met") is False and "error" not in ui:
        text = (
            f"- **ui_latency** (p99 {_fmt(ui['p99_ms'])} ms at {_fmt(ui['rate'])} events/s, "
            f"{_fmt(ui.get('fps', 0))} frames/s, lost {ui['lost']}). "
            + ("No event is lost (the store and the event log saw every one). "
               if ui["lost"] == 0 and ui.get("lost_in_log") == 0 else "")
            + "The event log is a line-API widget that keeps the filtered records and formats "
            "only the lines on screen; it was a `RichLog` that rendered every line when "
            "written, which made the app CPU-bound at this rate (measured before the change, "
            "same benchmark: p50 79.5 ms, p99 375.7 ms, 19.9 frames/s, render_state 24.7 ms, "
            "97.4 % of a core). Now the dashboard's work per frame, `render_state`, takes "
            f"{_fmt(ui.get('render_state_ms_p50', 0))} ms and the compositor "
            f"{_fmt(ui.get('compositor_ms_p50', 0))} ms (medians); the app used "
            f"{_fmt(ui.get('cpu_pct', 0))} % of a core (waiting for a CPU "
            f"{_fmt(ui.get('cpu_wait_pct') or 0)} % of the run), so it keeps up: p50 "
            f"{_fmt(ui['p50_ms'])} ms. The p99 is a tail, not the per-event cost: an event waits "
            "for the next redraw (the bridge draws at most 30 a second, up to 33 ms) and then "
            "for the frame. The tail is the flood's first quarter second, when 64 new jobs "
            "appear and each frame lays the screen out again as the jobs table grows: "
            f"{ui.get('layouts', '?')} full re-layouts in the worse size's run, "
            f"{_fmt(ui.get('layout_ms_p50') or 0)} ms each at p50; and garbage collections: "
            f"{ui.get('gc_full', '?')} full ones, the longest {_fmt(ui.get('gc_full_ms_max') or 0)} ms."
        )
        if ui.get("p99_after_1s_ms") is not None:
            text += f" Without the first second, p99 is {_fmt(ui['p99_after_1s_ms'])} ms."
        text += (" What would meet it: a lighter full-screen frame (Textual repaints every "
                 "widget after a re-layout), or fewer re-layouts while the jobs table grows.")
        out.append(text)
    tu = doc.get("table_update") or {}
    if doc["targets"].get("table_update", {}).get("met") is False and "error" not in tu:
        text = (
            f"- **table_update** (diff {_fmt(tu['ms'])} ms vs rebuild {_fmt(tu['rebuild_ms'])} "
            f"ms, {_fmt(tu['ratio'])}×). The diff writes only {tu.get('cells_written')} cells "
            "and reuses the rows of unchanged nodes (table work "
            f"{_fmt(tu.get('op_ms', 0))} ms); the rest is the frame, and the machine's load "
            "counts against the target's margin."
        )
        out.append(text)
    ev = doc.get("event_pipeline") or {}
    if doc["targets"].get("event_pipeline", {}).get("met") is False and "error" not in ev:
        out.append(
            f"- **event_pipeline** ({_fmt(ev['app_eps'])} events/s, "
            f"{_fmt(ev['ratio_vs_quiet'])} × the quiet bare client's "
            f"{_fmt(ev['bare_quiet_eps'])}; {_fmt(ev['ratio'])} × stock qemu.qmp's "
            f"{_fmt(ev['bare_eps'])}). Both clients parse the same messages; what the app adds "
            "per event is its event record and the reducer's work (the pump and the store change "
            "are per batch of queued events). What would meet it: a lighter record per event "
            "(the log could keep the raw event and build its record when shown)."
        )
    kl = doc.get("key_latency") or {}
    if doc["targets"].get("key_latency", {}).get("met") is False and "error" not in kl:
        kinds = sorted(("cursor", "filter", "dialog"), key=lambda k: -kl.get(f"{k}_p99_ms", 0))
        out.append(
            f"- **key_latency** (p99 {_fmt(kl['p99_ms'])} ms, p50 {_fmt(kl['p50_ms'])} ms over "
            f"{kl['presses']} keys; {kl['connections']} connections polled every 2 s and "
            f"{_fmt(kl['events_per_s_measured'])} events/s arriving). By kind, p50 / p99: "
            + "; ".join(f"{k} {_fmt(kl[f'{k}_p50_ms'])} / {_fmt(kl[f'{k}_p99_ms'])} ms"
                        for k in kinds)
            + ". "
            + "".join(f"The typical {k} key ({_fmt(kl[f'{k}_p50_ms'])} ms at p50) is itself "
                      "over the target: not a tail but the cost of most such keys. "
                      for k in kinds if kl.get(f"{k}_p50_ms", 0) > 50)
            + f"With {kl['presses']} keys in the run, the p99 is its slowest key or two, so one "
            "stall decides it. Measured in separate runs (timelines of each slow key): what "
            "lands on a slow key is a full re-layout (showing or hiding the filter, a filter "
            "that removes rows: 10-20 ms of frame on this fleet) together with a garbage "
            "collection or a burst of poll replies. What would meet it: a lighter full-screen "
            "frame (Textual repaints every widget after a re-layout)."
        )
    sf = doc.get("status_fleet") or {}
    if doc["targets"].get("status_fleet", {}).get("met") is False and "error" not in sf:
        gap = sf["app_s"] - sf["baseline_s"]
        start_gap = sf.get("app_startup_s", 0) - sf.get("baseline_startup_s", 0)
        out.append(
            f"- **status_fleet** ({_fmt(sf['app_s'])} s vs {_fmt(sf['baseline_s'])} s for the "
            f"quiet bare script, {_fmt(sf['ratio'])}×; {_fmt(sf['ratio_vs_stock'])}× the stock "
            f"qemu.qmp script's {_fmt(sf['baseline_stock_s'])} s). Of the {gap:.2f} s "
            f"difference, start-up alone accounts for {start_gap:.2f} s"
            + (" (all of it: the rest of the run is no slower than the script's)"
               if start_gap >= gap else f", the other {gap - start_gap:.2f} s is the app's "
               "own work per connection (the store, the parse into the model, the document)")
            + ": "
            f"`bitmap-tui status --help` takes {_fmt(sf.get('app_startup_s', 0))} s, "
            f"`python -c \"import qemu.qmp\"` {_fmt(sf.get('baseline_startup_s', 0))} s (the "
            "console script imports the whole CLI, every subcommand's modules, before parsing "
            "its arguments: `tui/cli/main.py` imports every subcommand module to register it). "
            "What would meet it: import only the chosen subcommand's modules (lazily, after "
            "parsing)" + ("" if start_gap >= gap else ", and less work per connection") + "."
        )
    bo = doc.get("backup_overhead") or {}
    if doc["targets"].get("backup_overhead", {}).get("met") is False and "error" not in bo:
        out.append(
            f"- **backup_overhead** (job {_fmt(bo['app_s'])} s through `apply` vs "
            f"{_fmt(bo['baseline_s'])} s by raw QMP, {_fmt(bo['ratio'])}×; runs: app "
            f"{bo.get('app_runs_s')}, raw {bo.get('baseline_runs_s')}). The copy of "
            f"{bo['size_mib']} MiB runs at about {_fmt(bo.get('mib_per_s_app', 0))} MiB/s "
            f"(from the page cache), so a job lasts about {_fmt(bo['app_s'])} s and the spread "
            "between runs is of the size of the difference: more rounds or a bigger disk "
            "decide whether the app's polling slows the copy."
        )
    st = doc.get("startup") or {}
    if doc["targets"].get("startup", {}).get("met") is False and "error" not in st:
        out.append(
            f"- **startup** ({_fmt(st['app_s'])} s vs {_fmt(st['baseline_s'])} s for `import "
            "textual`): import time of the app's modules beyond Textual; check the load "
            "average above, which inflates it."
        )
    return out


def margin_notes(doc: dict[str, Any]) -> list[str]:
    """Targets met, but with little margin on a loaded machine: say so, with the numbers."""
    out: list[str] = []
    tu = doc.get("table_update") or {}
    if doc["targets"].get("table_update", {}).get("met"):
        out.append(
            f"- **table_update** ({_fmt(tu['ratio'])}×): unchanged nodes' rows are reused, so "
            f"the diff path's table work is {_fmt(tu.get('op_ms', 0))} ms for "
            f"{_fmt(tu.get('table_rows', 0))} rows; the frame itself is most of what remains, "
            "and on a busier machine the ratio can fall under 20×."
        )
    sf = doc.get("status_fleet") or {}
    if doc["targets"].get("status_fleet", {}).get("met") and "error" not in sf:
        out.append(
            f"- **status_fleet** ({_fmt(sf['ratio'])}×; runs: app {sf.get('app_runs_s')} s, "
            f"script {sf.get('baseline_runs_s')} s): the app starts slower "
            f"(`bitmap-tui status --help` {_fmt(sf.get('app_startup_s', 0))} s vs `import "
            f"qemu.qmp` {_fmt(sf.get('baseline_startup_s', 0))} s: `tui/cli/main.py` imports "
            "every subcommand's modules) and makes it up on the connections; with a difference "
            "that size in start-up alone, a slower start on a loaded machine moves the ratio "
            "above the target."
        )
    for key, what in (("ui_latency", "events"), ("key_latency", "keys")):
        lat = doc.get(key) or {}
        if doc["targets"].get(key, {}).get("met") and "error" not in lat and lat["p99_ms"] > 40:
            out.append(
                f"- **{key}** (p99 {_fmt(lat['p99_ms'])} ms, max {_fmt(lat.get('max_ms', 0))} ms): "
                f"within {_fmt(50 - lat['p99_ms'])} ms of the target. The {what} that wait "
                "longest wait for a full-screen frame (Textual repaints every widget after a "
                "re-layout) or a garbage collection; on a busier machine those stretch first."
            )
    bo = doc.get("backup_overhead") or {}
    if doc["targets"].get("backup_overhead", {}).get("met") and "error" not in bo:
        out.append(
            f"- **backup_overhead** ({_fmt(bo['ratio'])}×; runs: app {bo.get('app_runs_s')} s, "
            f"raw QMP {bo.get('baseline_runs_s')} s): the copy of {bo['size_mib']} MiB runs at "
            f"about {_fmt(bo.get('mib_per_s_app', 0))} MiB/s (from the page cache), so each job "
            f"lasts about {_fmt(bo['app_s'])} s, a few of the app's job polls (every 0.5 s while "
            "a job runs), and the runs spread about as much as the margin. The whole command is slower than the script: "
            f"{_fmt(bo.get('app_wall_s', 0))} s vs {_fmt(bo.get('baseline_wall_s', 0))} s "
            f"({_fmt(bo.get('wall_ratio', 0))}×: the app's start-up, connection probe and "
            "pre-flight checks), which the target does not count."
        )
    st = doc.get("startup") or {}
    if doc["targets"].get("startup", {}).get("met") and "error" not in st:
        out.append(
            f"- **startup** ({_fmt(st['app_s'])} s): {_fmt(st['ratio'])}× the time of "
            "`import textual` alone; on this machine under heavy load (other processes "
            "busy on both cores) it has measured above 1 s, so the margin depends on the load."
        )
    return out


def write_report(doc: dict[str, Any]) -> str:
    run = doc["run"]
    m = run["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"- **Command:** `{run['command']}` (mode: {run['mode']}, {run['seconds']} s)",
        f"- **Date:** {run['date']}",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}, Textual {m['textual']}, qemu.qmp {m['qemu.qmp']}, {m['qemu']}",
        f"- **Load average** at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')} (other work on the machine makes figures noisy; each "
        "figure is compared with a baseline measured in the same run).",
        "",
        "Regenerate with `python benchmarks/run.py` (full) or `--quick`; `--json` prints every "
        "figure. How each is measured is in the docstring of its `benchmarks/bench_*.py`.",
        "",
        "## Targets",
        "",
        "| key | target | result |",
        "|---|---|---|",
    ]
    for key, t in doc["targets"].items():
        lines.append(f"| `{key}` | {t['target']} | {_met(doc, key)} |")
    lines += ["", "## Figures", ""]
    lines += _section(doc, "event_pipeline", "QMP events/s from a socket into the state model", [
        ("events per run", "events", ""),
        ("app events/s", "app_eps", "Connection pump → Store → reducer"),
        ("bare events/s", "bare_eps", "stock qemu.qmp client draining the same stream"),
        ("ratio", "ratio", "app / bare"),
        ("bare (quiet) events/s", "bare_quiet_eps",
         "qemu.qmp without its per-message debug formatting, as the app's client"),
        ("ratio vs quiet", "ratio_vs_quiet", "what the app's own layers cost"),
        ("all events reached the store", "all_events_reached_store", ""),
    ])
    lines += _section(doc, "ui_latency", "headless dashboard fed events from a socket", [
        ("rate (events/s)", "rate", ""),
        ("events", "events", ""),
        ("p50 latency (ms)", "p50_ms", "sent → first frame that includes it, both sizes"),
        ("p99 latency (ms)", "p99_ms", "the worse size's"),
        ("max latency (ms)", "max_ms", ""),
        ("p99 latency after the first second (ms)", "p99_after_1s_ms",
         "the steady state, for comparison"),
        ("p99 at 120x40 (ms)", "by_size.120x40.p99_ms", "wide layout: panels side by side"),
        ("p99 at 80x24 (ms)", "by_size.80x24.p99_ms", "narrow layout: panels stacked"),
        ("lost (store)", "lost", "sent − reached the state model"),
        ("lost (event log)", "lost_in_log", "sent − written to the event log"),
        ("frames/s", "fps", "dashboard frames produced during the run"),
        ("full garbage collections", "gc_full", "Python's generation 2, during the run"),
        ("longest full collection (ms)", "gc_full_ms_max", "the app stands still meanwhile"),
        ("app CPU (% of a core)", "cpu_pct", "during the run; > 100 cannot keep up"),
        ("app waiting for a CPU (% of the run)", "cpu_wait_pct",
         "ready to run, but the machine was busy with other processes"),
        ("render_state p50 (ms)", "render_state_ms_p50", "store state → widgets, per frame"),
        ("render_state p90 (ms)", "render_state_ms_p90", ""),
        ("compositor p50 (ms)", "compositor_ms_p50", "widgets → screen update → terminal text"),
        ("compositor p90 (ms)", "compositor_ms_p90", ""),
        ("full re-layouts", "layouts", "a widget changed size: every widget reflows"),
        ("re-layout p50 (ms)", "layout_ms_p50", ""),
        ("terminal sizes", "size", "figures from frames/s down: the worse size's run"),
    ])
    lines += _histogram_section(doc, "ui_latency", "Event sent → first frame that shows it")
    lines += _section(doc, "fleet", "connections × nodes × bitmaps: refresh, idle, memory", [
        ("connections", "connections", "fake QMP servers + real QEMUs"),
        ("fake servers / real QEMUs", "fake_servers", f"{_fmt((doc.get('fleet') or {}).get('real_qemus', '—'))} real QEMUs"),
        ("nodes", "nodes", ""),
        ("bitmaps", "bitmaps", ""),
        ("full refresh (ms)", "refresh_ms", "all connections at once"),
        ("bare full refresh (ms)", "bare.refresh_ms", "stock qemu.qmp clients, same queries"),
        ("refresh ratio", "refresh_ratio", "app / bare"),
        ("idle CPU (% of a core)", "idle_cpu_pct", "refresh every `refresh_interval_s`"),
        ("bare idle CPU (%)", "bare.idle_cpu_pct", "same queries at the same interval"),
        ("bare (quiet) idle CPU (%)", "bare_quiet.idle_cpu_pct", "full run only"),
        ("app idle CPU at a longer interval (%)", "app_at_interval.idle_cpu_pct",
         f"interval {_fmt(((doc.get('fleet') or {}).get('app_at_interval') or {}).get('interval_s', '—'))} s (full run only)"),
        ("refresh interval (s)", "refresh_interval_s", "the default"),
        ("idle window (s)", "idle_s", ""),
        ("peak RSS (MB)", "rss_mb", "app process"),
        ("bare peak RSS (MB)", "bare.rss_mb", ""),
    ])
    lines += _section(doc, "startup", "console script to first frame", [
        ("app (s)", "app_s", "median; `bitmap-tui --connect …`, headless driver"),
        ("baseline (s)", "baseline_s", "median; `python -c \"import textual\"`"),
        ("ratio", "ratio", "app / baseline"),
        ("runs", "runs", ""),
    ])
    lines += _section(doc, "table_update", "1 % of the bitmap rows change", [
        ("bitmap rows", "rows", ""),
        ("table rows", "table_rows", "bitmaps + their nodes"),
        ("changed bitmaps", "changed", ""),
        ("diff path to frame (ms)", "ms", "`NodesTable.show` → `DiffTable.sync_rows`, median"),
        ("rebuild to frame (ms)", "rebuild_ms", "clear + add every row, median"),
        ("ratio", "ratio", "rebuild / diff"),
        ("diff path, table work only (ms)", "op_ms", ""),
        ("rebuild, table work only (ms)", "rebuild_op_ms", ""),
        ("cells written by the diff", "cells_written", ""),
    ])
    lines += _section(doc, "key_latency", "key press to the frame that shows its effect", [
        ("connections", "connections", "live: fake QMP servers (+ real QEMUs) + the flood"),
        ("fake servers", "fake_servers", ""),
        ("real QEMUs", "real_qemus", ""),
        ("events/s arriving", "events_per_s_measured",
         f"paced at {_fmt((doc.get('key_latency') or {}).get('event_rate', '—'))}/s, "
         "on the connection shown"),
        ("keys pressed", "presses", "cursor down/up, `/` + typing + esc, `n` + esc"),
        ("p50 latency (ms)", "p50_ms", "key sent → first frame with its effect"),
        ("p99 latency (ms)", "p99_ms", ""),
        ("max latency (ms)", "max_ms", ""),
        ("cursor p50 / p99 (ms)", "cursor_p50_ms",
         f"p99 {_fmt((doc.get('key_latency') or {}).get('cursor_p99_ms', '—'))}"),
        ("filter p50 / p99 (ms)", "filter_p50_ms",
         f"p99 {_fmt((doc.get('key_latency') or {}).get('filter_p99_ms', '—'))}"),
        ("dialog p50 / p99 (ms)", "dialog_p50_ms",
         f"p99 {_fmt((doc.get('key_latency') or {}).get('dialog_p99_ms', '—'))}"),
        ("keys with no frame within 10 s", "timeouts", ""),
        ("terminal size", "size", ""),
    ])
    lines += _histogram_section(doc, "key_latency", "Key sent → first frame with its effect")
    lines += _section(doc, "status_fleet", "`bitmap-tui status --json` over a fleet", [
        ("connections", "connections", "fake QMP servers + real QEMUs"),
        ("real QEMUs", "real_qemus", ""),
        ("app (s)", "app_s", "median; the console script, start to exit"),
        ("baseline (s)", "baseline_s",
         "median; qemu.qmp script, same connects and queries at once, no debug formatting"),
        ("ratio", "ratio", "app / baseline"),
        ("stock qemu.qmp script (s)", "baseline_stock_s", "the same with qemu.qmp as shipped"),
        ("ratio vs stock", "ratio_vs_stock", ""),
        ("app start-up alone (s)", "app_startup_s", "`bitmap-tui status --help`"),
        ("baseline start-up alone (s)", "baseline_startup_s", "`python -c \"import qemu.qmp\"`"),
        ("rounds", "rounds", ""),
    ])
    lines += _section(doc, "backup_overhead", "full backup through `apply` vs raw QMP", [
        ("disk (MiB)", "size_mib", "qcow2, written full before timing"),
        ("app job (s)", "app_s", "median; QEMU's created → concluded, job started by `apply`"),
        ("baseline job (s)", "baseline_s", "median; the same job by a qemu.qmp script"),
        ("ratio", "ratio", "app / baseline"),
        ("app process (s)", "app_wall_s", "`bitmap-tui apply`, start to exit"),
        ("baseline process (s)", "baseline_wall_s", "the script, start to exit"),
        ("process ratio", "wall_ratio", "start-up, connection probe and checks included"),
        ("copy speed (MiB/s)", "mib_per_s_app", "app's job"),
        ("rounds", "rounds", "each side once a round, alternating which goes first"),
    ])
    why = explanations(doc)
    if why:
        lines += ["## Targets not met: measurements, reasons, what would meet them", ""] + why + [""]
    notes = margin_notes(doc)
    if notes:
        lines += ["## Notes on targets that were met", ""] + notes + [""]
    lines += [
        "## Optimisations made in the core",
        "",
        "- `tui/core/qmp/client.py` `QuietQMPClient` (now the default client): qemu.qmp formats "
        "every message it sends or receives as indented JSON for its debug log before the "
        "logger drops it; the app's client skips that unless debug logging is on. About half "
        "of qemu.qmp's per-message cost on an event flood, and most of its idle polling cost.",
        "- Events skip qemu.qmp's listeners: the client appends each one, as the plain `dict` "
        "qemu.qmp parsed (not its `Message`, whose `Mapping` lookups are several times slower), "
        "to an `EventInbox` list that the pump takes whole. No `asyncio.Queue` hop and no "
        "never-shrinking `history` per event.",
        "- The reducer works on each job of a batch as a dict of its fields and builds one `Job` "
        "per job per batch (`dataclasses.replace` per event was a third of the app's cost); the "
        "event log keeps the event's own `data` dict instead of copying it.",
        "- Screen frames: the footer rebuilt all its key widgets (13 ms) on every cursor move "
        "and queued one rebuild per call; it now rebuilds only when its keys differ, once per "
        "refresh. Textual's paint timer runs at 240/s (`TEXTUAL_FPS`, set by `tui/ui/__init__.py`"
        " unless the operator sets it): at 60/s (and still at 120/s) it waited up to two periods after a slow frame. "
        "A table that fills its box takes new rows without a full-screen re-layout.",
        "- Fleet scale: the connections table reuses the row of every connection whose model is "
        "unchanged (201 rows were formatted every frame), the ledger watchers skip connections "
        "that did not change, and each connection's first poll comes at a random point of its "
        "interval so a fleet that connected together does not poll in step.",
        "- Dialogs: the add-bitmap dialog is composed once and emptied for each opening; the "
        "dashboard composes one hidden widget of each dialog kind with itself, so the first "
        "dialog does not pay Textual's first-use CSS parsing during a flood.",
        "- Garbage collection: thresholds (5000, 1, 1000) after `gc.freeze()` at start-up: young "
        "and middle collections walk few objects (about 4 and 6 ms here; with (20000, 20, 20) "
        "one middle collection took 100 ms once a 200-connection fleet had synced), full ones "
        "stay as rare as before.",
        "- Faster event handling makes a race likelier: a job poll answered just before a "
        "job's final events can be applied after them. The reducer's rule that such a poll "
        "never overrides the final events (on main) covers it; "
        "`tests/unit/test_connection_speed.py` checks it through `Connection.refresh_jobs`.",
        "",
    ]
    return "\n".join(lines)
