"""Core changes made for speed (benchmarks/), and the poll/event race a faster pump makes likelier."""

from __future__ import annotations

import json
import logging

import pytest
from qemu.qmp.message import Message

from tui.core.qmp.client import QuietQMPClient


class CountingMessage(Message):
    formatted = 0

    def __str__(self) -> str:
        CountingMessage.formatted += 1
        return super().__str__()


@pytest.mark.parametrize("hook", ["_cb_inbound", "_cb_outbound"])
def test_no_formatting_without_debug(hook: str) -> None:
    client = QuietQMPClient("quiet")
    client.logger.setLevel(logging.INFO)
    CountingMessage.formatted = 0
    msg = CountingMessage({"event": "STOP", "data": {}})
    assert getattr(client, hook)(msg) is msg
    assert CountingMessage.formatted == 0


@pytest.mark.parametrize("hook", ["_cb_inbound", "_cb_outbound"])
def test_formats_and_logs_with_debug(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    client = QuietQMPClient("quiet")
    client.logger.setLevel(logging.DEBUG)
    CountingMessage.formatted = 0
    msg = CountingMessage({"event": "STOP", "data": {}})
    with caplog.at_level(logging.DEBUG, logger=client.logger.name):
        assert getattr(client, hook)(msg) is msg
    assert CountingMessage.formatted == 1
    assert '"STOP"' in caplog.text


async def test_connection_uses_quiet_client_and_hands_the_store_plain_dicts(fake_qmp, fleet_for):
    from tests.kit.common import wait_for

    srv = await fake_qmp()
    fleet = await fleet_for(srv.address, refresh_interval=30)
    conn = fleet["vm0"]
    assert isinstance(conn._client, QuietQMPClient)
    store = fleet.store
    seen: list[type] = []
    original = store.apply_events

    def spy(name, events):  # type: ignore[no-untyped-def]
        events = list(events)
        seen.extend(type(e) for e in events)
        original(name, events)

    store.apply_events = spy  # type: ignore[method-assign]
    await srv.emit("JOB_STATUS_CHANGE", {"id": "j1", "status": "running"})
    await wait_for(lambda: "j1" in store.connection("vm0").jobs, what="event in the store")
    assert seen == [dict]
    assert store.connection("vm0").jobs["j1"].status == "running"


async def test_poll_answer_older_than_events_does_not_undo_them() -> None:
    """QEMU answered a job poll ("running"), then the job's final events were reduced before the
    polling task resumed: the store must keep what the (newer) events said."""
    from tui.core.model import reducer
    from tui.core.model.state import Job, JobResult
    from tui.core.model.store import Store
    from tui.core.qmp.address import parse_address
    from tui.core.qmp.connection import Connection

    store = Store()
    conn = Connection("vm", parse_address("unix:/nonexistent.sock"), store)
    running = Job(id="j1", type="backup", status="running")
    store.update("vm", lambda c: reducer.apply_jobs(c, {"j1": running}))

    async def query(command: str) -> object:
        assert command == "query-block-jobs"
        store.apply_event("vm", {"event": "BLOCK_JOB_COMPLETED", "data": {
            "device": "j1", "type": "backup", "len": 10, "offset": 10, "speed": 0}})
        store.apply_event("vm", {"event": "JOB_STATUS_CHANGE", "data": {"id": "j1", "status": "null"}})
        return [{"device": "j1", "type": "backup", "len": 10, "offset": 5, "busy": True,
                 "paused": False, "speed": 0, "io-status": "ok"}]

    conn._query = query  # type: ignore[method-assign]
    await conn.refresh_jobs()
    job = store.connection("vm").jobs["j1"]
    assert job.result is JobResult.COMPLETED
    assert job.finished


async def test_a_flood_is_reduced_in_batches_in_order_and_forgotten_by_the_client(
        fake_qmp, fleet_for):
    """Events already queued when one arrives are reduced with it (one snapshot and one
    notification per batch), in order; the client keeps no history of them (qemu.qmp's own
    listener would keep every event forever)."""
    from tests.kit.common import wait_for

    srv = await fake_qmp()
    fleet = await fleet_for(srv.address, refresh_interval=30)
    store = fleet.store
    notified = []
    store.subscribe(lambda: notified.append(store.events_seen))
    before = store.events_seen
    count = 2000
    flood = b"".join(json.dumps({"event": "JOB_STATUS_CHANGE", "data": {"id": "j1", "status": f"s{i}"},
                                 "timestamp": {"seconds": 1, "microseconds": 0}}).encode() + b"\r\n"
                     for i in range(count))
    await srv.send_raw(flood)  # one write: the client finds most of them already queued
    await wait_for(lambda: store.events_seen - before >= count, what="every event")
    assert store.events_seen - before == count
    assert store.connection("vm0").jobs["j1"].status == f"s{count - 1}"  # the last one wins
    statuses = [e.data.get("status") for e in list(store.events)[-count:]]
    assert statuses == [f"s{i}" for i in range(count)]
    changes = [n for n in notified if n > before]
    assert len(changes) < count / 4, len(changes)  # batched, not one per event
    client = fleet["vm0"]._client
    assert len(client.inbox) == 0  # taken whole by the pump
    assert client.events.history == ()  # qemu.qmp's own listener is bypassed: it remembers nothing
