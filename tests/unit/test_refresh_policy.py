"""Refresh policy: jobs are polled only while jobs exist; bitmaps on job events and a slow timer."""

from __future__ import annotations

import asyncio

from tests.kit.common import wait_for

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


async def test_old_qemu_2_6_end_to_end(fake_qmp, fleet_for):
    """A 2.6 QEMU: no query-jobs, bitmaps only in query-block's top level with `status`."""
    from tests.kit.replies import Q26_BLOCK, Q26_NAMED
    from tui.core.model.state import BitmapState

    srv = await fake_qmp(version=(2, 6, 0), replies={
        "query-commands": [{"name": n} for n in (
            "query-version", "query-commands", "query-named-block-nodes", "query-block",
            "query-block-jobs", "block-dirty-bitmap-add")],
        "query-named-block-nodes": Q26_NAMED,
        "query-block": Q26_BLOCK,
        "query-block-jobs": [{"device": "drive0", "type": "backup", "len": 100, "offset": 10,
                              "busy": True, "paused": False, "speed": 0, "io-status": "ok"}],
    })
    fleet = await fleet_for(srv.address, job_poll_interval=0.02)
    conn = fleet.store.connection("vm0")
    assert str(conn.version) == "2.6.0"
    assert conn.nodes["disk0"].bitmap("bm-frz").state is BitmapState.FROZEN
    assert conn.jobs["drive0"].progress == 0.1
    await wait_for(lambda: srv.commands.count("query-block-jobs") >= 3, what="old-style job polling")
    assert "query-jobs" not in srv.commands


async def test_off_screen_connections_are_polled_less_often_and_say_so(fake_qmp, fleet_for):
    """On screen: every refresh_interval. Off screen: OFF_SCREEN_FACTOR times less often, twice
    less again once nothing changed for a while (the model says how often); an event or coming
    into view refreshes at once."""
    from tui.core.qmp.polling import OFF_SCREEN_FACTOR, UNCHANGED_ROUNDS

    srv = await fake_qmp()
    fleet = await fleet_for(srv.address, refresh_interval=0.05)
    conn = fleet["vm0"]

    def nodes_polls() -> int:
        return srv.commands.count("query-named-block-nodes")

    start = nodes_polls()
    await asyncio.sleep(0.6)
    on_screen = nodes_polls() - start
    assert on_screen >= 6  # about every 50 ms
    assert fleet.store.connection("vm0").slow_poll is None

    conn.set_on_screen(False)
    assert fleet.store.connection("vm0").slow_poll == 0.05 * OFF_SCREEN_FACTOR
    await wait_for(lambda: conn._unchanged_rounds >= UNCHANGED_ROUNDS, timeout=5,
                   what="unchanged rounds")
    assert fleet.store.connection("vm0").slow_poll == 0.05 * OFF_SCREEN_FACTOR * 2
    start = nodes_polls()
    await asyncio.sleep(0.6)
    off_screen = nodes_polls() - start
    assert off_screen <= 2, (on_screen, off_screen)  # every 400 ms now

    before = nodes_polls()
    await srv.emit("JOB_STATUS_CHANGE", {"id": "j9", "status": "concluded"})
    await wait_for(lambda: nodes_polls() > before, timeout=0.3, what="refresh on an event")

    before = nodes_polls()
    conn.set_on_screen(True)
    assert fleet.store.connection("vm0").slow_poll is None
    await wait_for(lambda: nodes_polls() > before, timeout=0.3, what="refresh on coming into view")


async def test_a_fleet_started_together_polls_spread_over_the_interval(fake_qmp, fleet_for):
    """Connections that connect at the same moment do not poll in step (a 200-connection fleet
    would parse 200 node lists in one burst every interval)."""
    servers = [await fake_qmp() for _ in range(8)]
    polled_at: dict[int, float] = {}
    fleet = await fleet_for(*(s.address for s in servers), refresh_interval=1.0)
    first = [s.commands.count("query-named-block-nodes") for s in servers]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while len(polled_at) < len(servers) and loop.time() - start < 3:
        for i, srv in enumerate(servers):
            if i not in polled_at and srv.commands.count("query-named-block-nodes") > first[i]:
                polled_at[i] = loop.time() - start
        await asyncio.sleep(0.01)
    assert len(polled_at) == len(servers), "every connection polls within an interval or so"
    assert max(polled_at.values()) <= 1.2
    assert max(polled_at.values()) - min(polled_at.values()) > 0.2, polled_at  # in step: < 0.05
    assert fleet.store.connection("vm7").synced
