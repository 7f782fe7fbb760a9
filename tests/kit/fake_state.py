"""A deterministic fleet state filled by hand: every bitmap state, a running, a failed and a
cancelled job, a disconnected connection, and events with fixed timestamps."""

from __future__ import annotations

from dataclasses import replace

from tui.core.model import reducer
from tui.core.model.state import Bitmap, Job, JobResult, LinkState, Node, QemuVersion
from tui.core.model.store import Store
from tui.session import ConsoleContext

MiB = 1 << 20
T0 = 1_780_000_000  # fixed event time (UTC)


def nodes() -> dict[str, Node]:
    return {
        "disk0": Node("disk0", "qcow2", "/srv/vm/web-disk0.qcow2", 64 * MiB, device="drive0", bitmaps=(
            Bitmap("nightly", 65536, 3 * MiB, recording=True, busy=False, persistent=True),
            Bitmap("paused", 65536, 0, recording=False, busy=False, persistent=False),
            Bitmap("backup-in-use", 65536, 12 * MiB, recording=True, busy=True, persistent=True),
            Bitmap("crashed", 65536, 0, recording=False, busy=False, inconsistent=True,
                   persistent=True),
            Bitmap(None, 65536, 512 * 1024, recording=True, busy=False, persistent=False),
        )),
        "disk1": Node("disk1", "qcow2", "/srv/vm/web-disk1.qcow2", 1024 * MiB, device="drive1",
                      bitmaps=(Bitmap("weekly", 4096, 700 * MiB, recording=True, busy=False,
                                      persistent=True),)),
        "scratch": Node("scratch", "raw", "/srv/vm/scratch.img", 8 * MiB),
    }


def jobs() -> dict[str, Job]:
    return {
        "inc-0": Job("inc-0", "backup", "running", current=24 * MiB, total=64 * MiB,
                     speed=8 * MiB, node="disk0"),
        "inc-1": Job("inc-1", "backup", "concluded", current=5 * MiB, total=1024 * MiB,
                     error="Input/output error", node="disk1", result=JobResult.FAILED,
                     io_errors=1, last_io_error="read error, action report"),
        "full-2": Job("full-2", "backup", "null", current=2 * MiB, total=8 * MiB,
                      node="scratch", result=JobResult.CANCELLED),
    }


EVENTS = [
    ("web", {"event": "JOB_STATUS_CHANGE", "data": {"id": "inc-0", "status": "running"}}),
    ("web", {"event": "BLOCK_JOB_ERROR",
             "data": {"device": "inc-1", "operation": "read", "action": "report"}}),
    ("web", {"event": "BLOCK_JOB_COMPLETED",
             "data": {"type": "backup", "device": "inc-1", "len": 1024 * MiB, "offset": 5 * MiB,
                      "speed": 0, "error": "Input/output error"}}),
    ("web", {"event": "BLOCK_JOB_CANCELLED",
             "data": {"type": "backup", "device": "full-2", "len": 8 * MiB, "offset": 2 * MiB,
                      "speed": 0}}),
    ("db", {"event": "JOB_STATUS_CHANGE", "data": {"id": "x", "status": "null"}}),
]


def build_store() -> Store:
    """Two connections: 'web' (connected, full of state) and 'db' (disconnected)."""
    store = Store()
    store.add_connection("web", "unix:/run/qemu/web.qmp")
    store.add_connection("db", "unix:/run/qemu/db.qmp")
    store.update("web", lambda c: reducer.connected(c, QemuVersion(7, 2, 22), frozenset()))
    store.update("web", lambda c: reducer.apply_nodes(c, nodes()))
    store.update("web", lambda c: replace(c, jobs=jobs()))
    store.update("db", lambda c: reducer.link_changed(
        c, LinkState.DISCONNECTED, "connection lost: QEMU went away"))
    for i, (conn, ev) in enumerate(EVENTS):
        stamped = dict(ev, timestamp={"seconds": T0 + i, "microseconds": 0})
        # Log only: the jobs above already hold the reduced result.
        store.events.append(reducer.event_record(conn, stamped, 0.0))
        store.events_seen += 1
    return store


def running_job_events(store: Store, count: int, prefix: str = "j", conn: str = "web") -> None:
    """``count`` JOB_STATUS_CHANGE (running) events for jobs ``<prefix>0`` … into ``store``."""
    for i in range(count):
        store.apply_event(conn, {"event": "JOB_STATUS_CHANGE",
                                 "data": {"id": f"{prefix}{i}", "status": "running"}})


def store_only() -> ConsoleContext:
    """A console context with a store of one connected VM (two drives) and no live connection:
    sending is not part of a snapshot."""
    store = Store()
    store.add_connection("vm0", "unix:/run/vm0.qmp")
    nodes = {
        f"disk{i}": Node(f"disk{i}", "qcow2", f"/images/drive{i}.qcow2", 64 << 20,
                         device=f"drive{i}",
                         bitmaps=(Bitmap(f"bitmap{i}", 65536, 458752, True, False,
                                         persistent=False),))
        for i in (0, 1)
    }
    store.update("vm0", lambda c: replace(c, state=LinkState.CONNECTED, nodes=nodes, synced=True))
    return ConsoleContext(store=store)
