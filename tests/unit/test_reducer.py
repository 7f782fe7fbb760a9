"""The pure reducer, fed event sequences observed on QEMU 7.2 (docs/qmp-facts.md, "Job verbs by status")."""

from __future__ import annotations

from tui.core.model import reducer
from tui.core.model.state import ConnectionModel, Job, JobResult, LinkState
from tui.core.model.store import Store


def ev(name, **data):
    return {"event": name, "data": data, "timestamp": {"seconds": 100, "microseconds": 5}}


def run(events, conn=None):
    conn = conn or ConnectionModel(name="vm", address="unix:/x", state=LinkState.CONNECTED)
    for e in events:
        conn = reducer.reduce_event(conn, e)
    return conn


def test_success_sequence():
    conn = run([
        ev("JOB_STATUS_CHANGE", id="j0", status="created"),
        ev("JOB_STATUS_CHANGE", id="j0", status="running"),
        ev("JOB_STATUS_CHANGE", id="j0", status="waiting"),
        ev("JOB_STATUS_CHANGE", id="j0", status="pending"),
        ev("BLOCK_JOB_COMPLETED", device="j0", type="backup", len=100, offset=100, speed=0),
        ev("JOB_STATUS_CHANGE", id="j0", status="concluded"),
        ev("JOB_STATUS_CHANGE", id="j0", status="null"),
    ])
    j = conn.jobs["j0"]
    assert j.result is JobResult.COMPLETED and j.current == j.total == 100 and j.type == "backup"
    assert not conn.active_jobs


def test_error_report_sequence():
    conn = run([
        ev("JOB_STATUS_CHANGE", id="j1", status="running"),
        ev("BLOCK_JOB_ERROR", device="j1", operation="read", action="report"),
        ev("JOB_STATUS_CHANGE", id="j1", status="aborting"),
        ev("BLOCK_JOB_COMPLETED", device="j1", type="backup", len=100, offset=30, speed=0,
           error="Input/output error"),
    ])
    j = conn.jobs["j1"]
    assert j.result is JobResult.FAILED and j.error == "Input/output error"
    assert j.io_errors == 1 and j.last_io_error == "read error, action report" and j.current == 30


def test_cancel_and_pause_events():
    conn = run([
        ev("JOB_STATUS_CHANGE", id="j2", status="running"),
        ev("JOB_STATUS_CHANGE", id="j2", status="paused"),
    ])
    assert conn.jobs["j2"].paused
    conn = run([ev("BLOCK_JOB_CANCELLED", device="j2", type="backup", len=100, offset=16)], conn)
    assert conn.jobs["j2"].result is JobResult.CANCELLED and conn.jobs["j2"].current == 16


def test_unrelated_and_malformed_events_change_nothing():
    base = ConnectionModel(name="vm", address="x")
    for e in ({"event": "RESUME"}, {"event": "BLOCK_JOB_COMPLETED", "data": "junk"},
              {"event": "JOB_STATUS_CHANGE", "data": {"id": 3}}, {}, {"event": 7}):
        assert reducer.reduce_event(base, e) is base


def test_link_lost_marks_running_jobs_lost_not_finished_ones():
    conn = ConnectionModel(name="vm", address="x", state=LinkState.CONNECTED, jobs={
        "a": Job(id="a", type="backup", status="running"),
        "b": Job(id="b", type="backup", status="concluded", result=JobResult.COMPLETED),
    })
    lost = reducer.link_changed(conn, LinkState.DISCONNECTED, "connection lost")
    assert lost.jobs["a"].result is JobResult.LOST and lost.jobs["a"].error == "connection lost"
    assert lost.jobs["b"].result is JobResult.COMPLETED


def test_poll_keeps_event_knowledge_and_marks_vanished_jobs():
    conn = run([ev("BLOCK_JOB_ERROR", device="j", operation="read", action="stop")])
    conn = reducer.set_job_node(conn, "j", "disk1")
    polled = {"j": Job(id="j", type="backup", status="paused", current=5, total=10, paused=True)}
    conn = reducer.apply_jobs(conn, polled)
    assert conn.jobs["j"].node == "disk1" and conn.jobs["j"].io_errors == 1 and conn.jobs["j"].paused
    same = reducer.apply_jobs(conn, polled)
    assert same is conn  # nothing changed: same object, nothing to redraw
    gone = reducer.apply_jobs(conn, {})
    assert gone.jobs["j"].status == "null" and gone.jobs["j"].finished


def test_store_logs_events_with_severity_and_notifies():
    store = Store()
    store.add_connection("vm", "x")
    seen = []
    store.subscribe(lambda: seen.append(store.generation))
    store.apply_event("vm", ev("BLOCK_JOB_ERROR", device="j", operation="read", action="report"))
    store.apply_event("vm", ev("BLOCK_JOB_CANCELLED", device="k", type="backup", len=1, offset=0))
    store.apply_event("vm", ev("RESUME"))
    assert [e.severity for e in store.events] == ["error", "warning", "info"]
    assert store.events[0].time == 100.000005
    assert len(seen) == 3


def test_stale_poll_does_not_undo_a_jobs_final_events():
    conn = run([
        ev("BLOCK_JOB_COMPLETED", device="j", type="backup", len=10, offset=10),
        ev("JOB_STATUS_CHANGE", id="j", status="null"),
    ])
    stale = {"j": Job(id="j", type="backup", status="concluded", current=10, total=10,
                      result=JobResult.COMPLETED)}
    assert reducer.apply_jobs(conn, stale).jobs["j"].status == "null"
    # nor does a poll answered while the job still ran
    running = {"j": Job(id="j", type="backup", status="running", current=1, total=10)}
    kept = reducer.apply_jobs(conn, running).jobs["j"]
    assert kept.result is JobResult.COMPLETED and kept.finished
    # once dismissed, the id is free for a new job
    fresh = reducer.apply_jobs(reducer.dismiss_job(conn, "j"), running).jobs["j"]
    assert fresh.status == "running" and fresh.result is None


def test_a_connection_listener_hears_only_its_connection():
    store = Store()
    store.add_connection("a", "unix:/a")
    store.add_connection("b", "unix:/b")
    heard: list[str] = []
    unsubscribe = store.subscribe_connection("a", lambda: heard.append("a"))
    event = {"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "running"}}
    store.apply_event("b", event)
    assert heard == []
    store.apply_event("a", event)
    store.apply_event("a", {"event": "RTC_CHANGE", "data": {}})  # logged, state unchanged
    assert heard == ["a"]
    unsubscribe()
    store.apply_event("a", {"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "paused"}})
    assert heard == ["a"]
