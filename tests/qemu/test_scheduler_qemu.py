"""The scheduler on a real QEMU: a seconds field fires within the test, a slot missed while the
service was down runs once at start, a run still going when the next slot is due is skipped and
recorded, and ``prune: auto`` prunes after a scheduled backup."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from functools import partial

import yaml

from tests.kit.chains import reference, same
from tests.kit.common import append_stdin_command, make_policy, requires_qemu, wait_for
from tests.kit.txn import EXE
from tui.cli.points import iso_time
from tui.core.chains.points import list_points
from tui.core.chains.restore import restore_local
from tui.core.config import ServiceConfig
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import ImageState
from tui.service.notify import Notifier, schedule_notices
from tui.service.scheduler import Scheduler, missed_slot, run_and_prune

pytestmark = requires_qemu


def policy(sb, **kw):
    return make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                             "target_dir": str(sb.dir), **kw})


async def scheduled(ledger, pol, conn, until, events=None, on_event=None):
    """Run the scheduler until ``until()`` holds, then stop it."""
    if events is not None:
        on_event = lambda _p, what: events.append(what)  # noqa: E731
    sched = Scheduler(ledger, [pol], partial(run_and_prune, conn, ledger), on_event=on_event)
    task = asyncio.create_task(sched.run())
    try:
        await wait_for(until, timeout=90, what="the scheduled runs")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_seconds_schedule_fires_and_prune_auto_follows(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    conn = (await fleet_for(sb))["vm0"]
    pol = policy(sb, schedule="* * * * * */2", keep={"last": 1}, prune="auto")
    with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
        await sb.write(0, 0, "1M", 0x41)

        def three_runs_done() -> bool:
            return sum(r.result == "ok" for r in ledger.scheduled_runs("p")) >= 3

        await scheduled(ledger, pol, conn, three_runs_done)
        runs = [r for r in ledger.scheduled_runs("p") if r.result == "ok"]
        assert all(r.slot % 2 == 0 and r.started >= r.slot for r in runs)
        images = ledger.images()
        assert {im.state for im in images} >= {ImageState.VALID}
        # keep last 1 with prune: auto: a run's prune merged the points before into the full.
        points = list_points(ledger, drive="drive0")
        assert [p.verdict for p in points][0] == "pruned"
        newest = max((p for p in points if p.restorable), key=lambda p: p.point)
        assert newest.point == len(runs) >= 3
        ref = await reference(sb, 0, "ref.qcow2")
        out = str(tmp_path / "restored.qcow2")
        restore_local(ledger, newest, out, "qcow2")
        assert same(out, ref).returncode == 0


async def test_missed_slot_runs_once_at_start(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    conn = (await fleet_for(sb))["vm0"]
    pol = policy(sb, schedule="0 * * * *")  # hourly: the next slot is far from the test
    with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
        assert missed_slot(ledger, pol, time.time()) is None  # never ran: nothing missed
        three_hours_ago = time.time() - 3 * 3600
        ledger.end_scheduled_run(ledger.start_scheduled_run("p", three_hours_ago), "ok")
        due = missed_slot(ledger, pol, time.time())
        assert due is not None and due > three_hours_ago
        out = tmp_path / "notices.txt"
        command = append_stdin_command(out)
        notifier = Notifier()
        await scheduled(ledger, pol, conn,
                        lambda: any(r.result for r in ledger.scheduled_runs("p")[:1]
                                    if r.slot == due),
                        on_event=schedule_notices(notifier, ServiceConfig(notify_command=command)))
        await notifier.drain()
        runs = ledger.scheduled_runs("p")
        assert [(r.slot, r.result) for r in runs] == [(due, "ok"), (three_hours_ago, "ok")]
        notices = out.read_text()
        assert notices.startswith("bitmap-tui: vm0 policy p: scheduled run missed\n\nVM vm0, policy p: "
                                  "missed the run due at ")
        assert notices.count("bitmap-tui: ") == 1 and "(the service was down): running it now" in notices
        assert [im.state for im in ledger.images()] == [ImageState.VALID]
        assert missed_slot(ledger, pol, time.time()) is None
    # The command lists it: schedule, next slot, the last run and its result.
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"connections": {"vm0": sb.address}, "policies": {
        "p": {"connection": "vm0", "drives": ["drive0"], "target_dir": str(sb.dir),
              "schedule": "0 * * * *", "jitter": 60},
        "q": {"connection": "vm0", "drives": ["drive0"], "target_dir": str(sb.dir)}}}))
    base = [EXE, "schedule", "--config", str(cfg), "--ledger", str(tmp_path / "ledger.sqlite")]
    listed = await asyncio.to_thread(subprocess.run, [*base, "--json"], capture_output=True,
                                     text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    p, q = json.loads(listed.stdout)["policies"]
    assert (p["schedule"], p["jitter"], p["last"]["result"]) == ("0 * * * *", 60, "ok")
    assert p["last"]["slot"] == iso_time(due) and p["next"] == iso_time(due + 3600)
    assert q["schedule"] is None and q["next"] is None and q["last"] is None
    text = await asyncio.to_thread(subprocess.run, base, capture_output=True, text=True,
                                   timeout=60)
    assert text.stdout.splitlines() == [
        "p on vm0: '0 * * * *' (+ up to 60 s)", f"  next: {iso_time(due + 3600)}",
        f"  last: {iso_time(due)}: ok", "q on vm0: not scheduled", "  last: never"]


async def test_a_run_still_going_makes_the_next_slot_skipped(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    conn = (await fleet_for(sb))["vm0"]
    pol = policy(sb, schedule="* * * * * *", speed=256 * 1024)  # every second, a slow job
    await sb.write(0, 0, "8M", 0x51)
    with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
        events: list[str] = []

        def skipped() -> bool:
            return any((r.result or "").startswith("skipped") for r in ledger.scheduled_runs("p"))

        await scheduled(ledger, pol, conn, skipped, events)
        running = [r for r in ledger.scheduled_runs("p") if r.result is None or
                   r.result.startswith("failed: the service stopped")]
        assert len(running) == 1  # the one slow run; every later slot was skipped
        assert any(e.startswith("skipped: the run before was still going at ") for e in events)
