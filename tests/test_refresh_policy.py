"""Refresh policy: jobs are polled only while jobs exist; bitmaps on job events and a slow timer."""

from __future__ import annotations

import asyncio

from tests.conftest import wait_for

RUNNING = [{"id": "j0", "type": "backup", "status": "running", "current-progress": 1,
            "total-progress": 10}]


async def test_idle_connection_does_not_poll_jobs(fake_qmp, fleet_for):
    srv = await fake_qmp()
    fleet = await fleet_for(srv.address, refresh_interval=0.1, job_poll_interval=0.02)
    await wait_for(lambda: srv.commands.count("query-named-block-nodes") >= 4, what="slow timer")
    # only the initial read: no job exists, so nothing polls query-jobs
    assert srv.commands.count("query-jobs") == 1
    assert fleet.store.connection("vm0").jobs == {}


async def test_jobs_polled_while_they_exist_then_stop(fake_qmp, fleet_for):
    srv = await fake_qmp(replies={"query-jobs": RUNNING})
    fleet = await fleet_for(srv.address, refresh_interval=30, job_poll_interval=0.02)
    await wait_for(lambda: srv.commands.count("query-jobs") >= 5, what="job polling")
    srv.replies["query-jobs"] = []
    await srv.emit("BLOCK_JOB_COMPLETED", {"device": "j0", "type": "backup", "len": 10, "offset": 10})
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].finished, what="job end")
    settled = srv.commands.count("query-jobs")
    await asyncio.sleep(0.3)  # fifteen poll intervals: none may happen now
    assert srv.commands.count("query-jobs") <= settled + 1


async def test_job_event_triggers_bitmap_refresh(fake_qmp, fleet_for):
    srv = await fake_qmp()
    await fleet_for(srv.address, refresh_interval=30)
    before = srv.commands.count("query-named-block-nodes")
    await srv.emit("JOB_STATUS_CHANGE", {"id": "j9", "status": "concluded"})
    await wait_for(lambda: srv.commands.count("query-named-block-nodes") > before, what="refresh")
