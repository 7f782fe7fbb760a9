"""Job operations, failure highlighting and notifications through the dashboard (real QEMU)."""

from __future__ import annotations

import pytest

from tests.kit.common import requires_qemu, wait_for
from tests.kit.dashboard import outcome, outcomes_seen, running, sent_commands, settle
from tui.core.base.audit import AuditLog
from tui.core.model.state import JobResult
from tui.ui.screens.dialogs import ConfirmDialog, SpeedDialog

pytestmark = requires_qemu


def job(fleet, jid, conn="vm0"):
    return fleet.store.connection(conn).jobs.get(jid)


async def start_backup(sb, fleet, jid, drive=0, **extra):
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": f"tgt-{jid}", "size": 64 << 20})
    args = {"job-id": jid, "device": f"disk{drive}", "target": f"tgt-{jid}", "sync": "full",
            "speed": 65536}
    args.update(extra)
    await fleet["vm0"].execute("blockdev-backup", args)


@pytest.fixture
async def vm(sandbox, fleet_for, tmp_path):
    await sandbox.write(0, 0, "8M")
    audit = tmp_path / "audit.jsonl"
    fleet = await fleet_for(sandbox, audit=AuditLog(audit), job_poll_interval=0.1)
    return sandbox, fleet, audit


async def press_and_wait(pilot, dash, *keys):
    n = outcomes_seen(dash)
    await pilot.press(*keys)
    return await outcome(pilot, dash, n)


async def test_pause_resume_speed_finalize_dismiss(vm):
    sb, fleet, audit = vm
    await start_backup(sb, fleet, "j0", **{"auto-finalize": False, "auto-dismiss": False})
    async with running(fleet) as (app, pilot, dash):
        await settle(pilot, dash)
        assert dash.select_job("vm0", "j0")
        dash.jobs_table.focus()
        # Not allowed now: refused with the reason, nothing sent.
        for key, reason in (("u", "not paused"), ("F", "cannot finalize"), ("D", "only a finished")):
            out = await press_and_wait(pilot, dash, key)
            assert not out.ok and not out.sent and reason in out.message, key
        out = await press_and_wait(pilot, dash, "p")
        assert out.ok, out.message
        await wait_for(lambda: job(fleet, "j0").paused, what="paused")
        await settle(pilot, dash)
        assert str(dash.jobs_table.get_row("vm0\x1fj0")[2]) == "paused"
        out = await press_and_wait(pilot, dash, "u")
        assert out.ok, out.message
        await wait_for(lambda: not job(fleet, "j0").paused, what="resumed")
        await pilot.press("s")
        assert isinstance(app.screen, SpeedDialog)
        speed_box = app.screen.query_one("#speed")
        speed_box.value = "-5"
        await pilot.press("enter")
        assert isinstance(app.screen, SpeedDialog), "a bad speed keeps the dialog open"
        speed_box.value = "0"
        out = await press_and_wait(pilot, dash, "enter")
        assert out.ok, out.message
        await wait_for(lambda: job(fleet, "j0").status == "pending", timeout=30, what="pending")
        await settle(pilot, dash)
        assert str(dash.jobs_table.get_row("vm0\x1fj0")[2]) == "pending"
        out = await press_and_wait(pilot, dash, "F")
        assert out.ok, out.message
        await wait_for(lambda: job(fleet, "j0").status == "concluded", what="concluded")
        await settle(pilot, dash)
        assert str(dash.jobs_table.get_row("vm0\x1fj0")[2]) == "completed"
        out = await press_and_wait(pilot, dash, "D")
        assert out.ok, out.message
        await settle(pilot, dash)
        assert "vm0\x1fj0" not in dash.jobs_table.rows
        assert job(fleet, "j0") is None
    assert sent_commands(audit) == ["blockdev-backup", "job-pause", "job-resume",
                                    "block-job-set-speed", "job-finalize", "job-dismiss"]


async def test_cancel_is_confirmed_and_dismiss_forgets_a_vanished_job(vm):
    sb, fleet, audit = vm
    await start_backup(sb, fleet, "j1")
    async with running(fleet) as (app, pilot, dash):
        await settle(pilot, dash)
        dash.select_job("vm0", "j1")
        dash.jobs_table.focus()
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog) and "'j1'" in app.screen.question
        await pilot.press("escape")
        await pilot.pause()
        assert "job-cancel" not in sent_commands(audit)
        out = await press_and_wait(pilot, dash, "c", "y")
        assert out.ok, out.message
        await wait_for(lambda: job(fleet, "j1").result is JobResult.CANCELLED, what="cancelled")
        qemu_jobs: list = [None]

        async def qemu_has_no_jobs() -> bool:
            qemu_jobs[0] = await sb.qmp("query-jobs")
            return qemu_jobs[0] == []

        while not await qemu_has_no_jobs():  # QEMU auto-dismisses a cancelled job
            await pilot.pause(0.05)
        await settle(pilot, dash)
        assert str(dash.jobs_table.get_row("vm0\x1fj1")[2]) == "cancelled"
        out = await press_and_wait(pilot, dash, "D")
        assert out.ok, out
        await settle(pilot, dash)
        assert "vm0\x1fj1" not in dash.jobs_table.rows
        assert job(fleet, "j1") is None
        # cancellations are highlighted in the event log
        lines = [s.text for s in dash.event_log.lines]
        assert any("BLOCK_JOB_CANCELLED" in line for line in lines)


async def test_failed_job_is_highlighted_and_notified(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2, failing=[1])
    await sb.write(1, 0, "1M")
    await sb.arm_read_error(1)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    async with running(fleet, size=(120, 40)) as (app, pilot, dash):
        await start_backup(sb, fleet, "bad", drive=1, speed=0)
        await wait_for(lambda: job(fleet, "bad").result is JobResult.FAILED, what="failure")
        await settle(pilot, dash)
        row = dash.jobs_table.get_row("vm0\x1fbad")
        assert str(row[2]) == "failed" and "Input/output error" in str(row[7])
        notes = [n for n in app._notifications if n.severity == "error"]
        assert any("bad" in n.message and "Input/output error" in n.message for n in notes)
        log = dash.event_log
        err_style = log.get_component_rich_style("event--error", partial=True)
        hits = [seg for strip in log.lines for seg in strip if "BLOCK_JOB_ERROR" in seg.text]
        assert hits and all(seg.style and seg.style.color == err_style.color for seg in hits)
        done = [seg for strip in log.lines for seg in strip
                if "BLOCK_JOB_COMPLETED" in seg.text]
        assert done and done[0].style.color == err_style.color  # a completion with an error
