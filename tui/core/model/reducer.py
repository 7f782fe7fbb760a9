"""Pure reducer: (connection state, QMP event or poll result) → new connection state.

Nothing here does I/O or keeps hidden state, so every QEMU generation's events and replies can be
replayed in unit tests and fuzzed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any

from tui.core.model.state import (
    ConnectionModel,
    EventRecord,
    Job,
    JobResult,
    LinkState,
    Node,
    QemuVersion,
)

# Events after which a node's bitmaps may have changed (a backup cleared, restored or merged them).
JOB_EVENTS = frozenset(
    {
        "BLOCK_JOB_COMPLETED",
        "BLOCK_JOB_CANCELLED",
        "BLOCK_JOB_ERROR",
        "BLOCK_JOB_READY",
        "BLOCK_JOB_PENDING",
        "JOB_STATUS_CHANGE",
    }
)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _job_id(name: str, data: Mapping[str, Any]) -> str | None:
    # BLOCK_JOB_* carry the job id in "device" (since 2.7); JOB_STATUS_CHANGE and PENDING use "id".
    key = "id" if name in ("JOB_STATUS_CHANGE", "BLOCK_JOB_PENDING") else "device"
    value = data.get(key)
    return value if isinstance(value, str) and value else None


# A job being reduced: its fields by name (mutable, so a batch's events cost one Job per job).
JobFields = dict[str, Any]
_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _fields_of(job: Job) -> JobFields:
    return {name: getattr(job, name) for name in _JOB_FIELDS}


def _with_progress(job: JobFields, data: Mapping[str, Any]) -> None:
    total = max(0, _int(data.get("len"), job["total"]))
    current = max(0, _int(data.get("offset"), job["current"]))
    if total:
        current = min(current, total)
    job["total"] = total
    job["current"] = current
    job["speed"] = max(0, _int(data.get("speed"), job["speed"]))


def reduce_event(conn: ConnectionModel, event: Mapping[str, Any]) -> ConnectionModel:
    """Apply one QMP event (``{"event", "data", "timestamp"}``) to a connection's state."""
    return reduce_events(conn, (event,))


def reduce_events(conn: ConnectionModel, events: Iterable[Mapping[str, Any]]) -> ConnectionModel:
    """Apply QMP events in order; one new state for the batch (``conn`` itself if none mattered).

    Each job an event touches is worked on as a dict of its fields and made a Job once at the
    end: a flood of a job's lifecycle events costs one new Job per batch, not one per event."""
    work: dict[str, JobFields] = {}
    for event in events:
        name = event.get("event")
        if not isinstance(name, str) or name not in JOB_EVENTS:
            continue
        data = event.get("data")
        if not isinstance(data, Mapping):
            continue
        jid = _job_id(name, data)
        if jid is None:
            continue
        job = work.get(jid)
        if job is None:
            before = conn.jobs.get(jid)
            if before is None and name == "JOB_STATUS_CHANGE" and data.get("status") == "null":
                # The last word of a job the operator already dismissed from view: do not resurrect it.
                continue
            job = _fields_of(before if before is not None else Job(id=jid, type="?", status="running"))
            if _apply_job_event(job, name, data):
                work[jid] = job
        else:
            _apply_job_event(job, name, data)
    return _with_jobs(conn, work)


def _with_jobs(conn: ConnectionModel, work: dict[str, JobFields]) -> ConnectionModel:
    """``conn`` with the worked-on jobs (``conn`` itself if every one is as it was)."""
    jobs: dict[str, Job] | None = None
    for jid, job_fields in work.items():
        job = Job(**job_fields)
        if conn.jobs.get(jid) == job:
            continue
        if jobs is None:
            jobs = dict(conn.jobs)
        jobs[jid] = job
    return conn if jobs is None else replace(conn, jobs=jobs)


def _apply_job_event(job: JobFields, name: str, data: Mapping[str, Any]) -> bool:
    """Apply one job event to ``job`` in place; False (and ``job`` untouched) if it says nothing."""
    if name == "JOB_STATUS_CHANGE":
        status = data.get("status")
        if not isinstance(status, str):
            return False
        job["status"] = status
        job["paused"] = status == "paused"
    jtype = data.get("type")
    if job["type"] == "?" and isinstance(jtype, str) and jtype:
        job["type"] = jtype
    if name == "BLOCK_JOB_COMPLETED":
        error = data.get("error")
        error = error if isinstance(error, str) and error else None
        _with_progress(job, data)
        job["status"] = "concluded"
        job["error"] = error
        job["result"] = JobResult.FAILED if error else JobResult.COMPLETED
        if not error:
            job["current"] = job["total"] or job["current"]
    elif name == "BLOCK_JOB_CANCELLED":
        _with_progress(job, data)
        job["status"] = "concluded"
        job["result"] = JobResult.CANCELLED
    elif name == "BLOCK_JOB_ERROR":
        op = data.get("operation")
        action = data.get("action")
        job["io_errors"] += 1
        job["last_io_error"] = (f"{op if isinstance(op, str) else '?'} error, action "
                                f"{action if isinstance(action, str) else '?'}")
    elif name == "BLOCK_JOB_PENDING":
        job["status"] = "pending"
    elif name == "BLOCK_JOB_READY":
        _with_progress(job, data)
        job["status"] = "ready"
    return True


def apply_nodes(conn: ConnectionModel, nodes: dict[str, Node]) -> ConnectionModel:
    """Replace the node list, keeping unchanged nodes identical (``is``) so UIs can diff cheaply."""
    merged: dict[str, Node] = {}
    changed = len(nodes) != len(conn.nodes)
    for key, node in nodes.items():
        old = conn.nodes.get(key)
        if old is not None and old == node:
            merged[key] = old
        else:
            merged[key] = node
            changed = True
    if not changed and list(merged) == list(conn.nodes) and conn.synced:
        return conn
    return replace(conn, nodes=merged, synced=True)


def apply_jobs(
    conn: ConnectionModel, polled: dict[str, Job], keep: frozenset[str] = frozenset()
) -> ConnectionModel:
    """Merge a job poll: keep what only events tell (result, I/O errors, node); a job that was
    running and is gone from QEMU is marked ``null`` (its completion event tells the result).

    ``keep``: jobs that had an event while the poll was in flight. The poll's view of them may be
    older than the event (QEMU answered before the event was sent), so they keep their state."""
    jobs: dict[str, Job] = {}
    for jid, old in conn.jobs.items():
        if jid in keep:
            jobs[jid] = old
            continue
        new = polled.get(jid)
        if new is None:
            jobs[jid] = old if old.finished else replace(old, status="null")
            continue
        if old.status == "null" and old.result is not None:
            # The job's final events were reduced after QEMU answered this poll: the events are
            # newer. (A new job reusing the id is seen once the old record is dismissed, which
            # the dashboard and the transaction tracker do before reusing an id.)
            jobs[jid] = old
            continue
        # A job marked LOST by a dropped link that QEMU still lists after the reconnect is alive:
        # QEMU's word replaces "connection lost" (missed completion events show in its status).
        revived = old.result is JobResult.LOST
        merged = replace(
            new,
            node=old.node or new.node,
            result=new.result if revived else old.result or new.result,
            error=new.error if revived else old.error or new.error,
            io_errors=old.io_errors,
            last_io_error=old.last_io_error,
            type=new.type if new.type != "?" else old.type,
        )
        jobs[jid] = old if merged == old else merged
    for jid, new in polled.items():
        if jid not in jobs and jid not in keep:
            jobs[jid] = new
    if jobs == conn.jobs:
        return conn
    return replace(conn, jobs=jobs)


def set_job_node(conn: ConnectionModel, job_id: str, node: str) -> ConnectionModel:
    """Record the source node of a job the app started (QEMU does not report it)."""
    job = conn.jobs.get(job_id) or Job(id=job_id, type="backup", status="created")
    jobs = dict(conn.jobs)
    jobs[job_id] = replace(job, node=node)
    return replace(conn, jobs=jobs)


def dismiss_job(conn: ConnectionModel, job_id: str) -> ConnectionModel:
    """Forget a finished job (the operator dismissed it from view)."""
    if job_id not in conn.jobs:
        return conn
    jobs = {k: v for k, v in conn.jobs.items() if k != job_id}
    return replace(conn, jobs=jobs)


def connected(
    conn: ConnectionModel, version: QemuVersion | None, commands: frozenset[str]
) -> ConnectionModel:
    return replace(conn, state=LinkState.CONNECTED, error=None, version=version, commands=commands)


def link_changed(conn: ConnectionModel, state: LinkState, error: str | None) -> ConnectionModel:
    """A connection changed state. Losing it marks every running job LOST: nothing more will be
    heard of them here, so their images must not be trusted until reconciled."""
    jobs = conn.jobs
    if state in (LinkState.DISCONNECTED, LinkState.FAILED) and conn.state is LinkState.CONNECTED:
        jobs = {
            k: (
                v
                if v.finished
                else replace(v, result=JobResult.LOST, error=v.error or "connection lost")
            )
            for k, v in conn.jobs.items()
        }
    return replace(conn, state=state, error=error, jobs=jobs, synced=conn.synced and state is LinkState.CONNECTED)


def severity_of(event: Mapping[str, Any]) -> str:
    name = event.get("event")
    if name == "BLOCK_JOB_ERROR":
        return "error"
    if name == "BLOCK_JOB_CANCELLED":
        return "warning"
    if name == "BLOCK_JOB_COMPLETED":
        data = event.get("data")
        if isinstance(data, Mapping) and data.get("error"):
            return "error"
    return "info"


def event_record(connection: str, event: Mapping[str, Any], now: float) -> EventRecord:
    """The event log's record of one event. A plain-dict ``data`` (what the app's client hands
    over, parsed for this event alone) is kept as it is; any other mapping is copied."""
    ts = event.get("timestamp")
    when = now
    if isinstance(ts, Mapping):
        secs, usecs = ts.get("seconds"), ts.get("microseconds")
        if type(secs) is int and type(usecs) is int and secs > 0:
            when = secs + usecs / 1e6
    data = event.get("data")
    if type(data) is not dict:
        data = dict(data) if isinstance(data, Mapping) else {}
    name = event.get("event")
    return EventRecord(when, connection, name if type(name) is str else "?", data, severity_of(event))
