"""The small transaction-sending boundary the chains code uses.

Kept minimal on purpose: when the transaction engine (``tui/txn``) is available on main, these two
functions are the only place to switch over to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tui.chains.targets import QMPConn
from tui.model.state import Job, LinkState


async def send_transaction(
    conn: QMPConn, actions: list[dict[str, Any]], mode: str, job_nodes: dict[str, str] | None = None
) -> None:
    """Send one ``transaction``; raise QEMU's error (typed) if it is refused in prepare."""
    args: dict[str, Any] = {"actions": actions}
    if mode != "individual":
        args["properties"] = {"completion-mode": mode}
    await conn.execute("transaction", args)
    note = getattr(conn, "note_job_node", None)
    if note is not None:
        for job_id, node in (job_nodes or {}).items():
            note(job_id, node)


async def wait_jobs(conn: QMPConn, job_ids: list[str], timeout: float | None = None) -> dict[str, Job]:
    """Wait until every job has a result in the Store (completed, failed, cancelled, or lost when
    the connection dropped); returns the jobs as last seen. Raises TimeoutError."""
    store = conn.store  # type: ignore[attr-defined]
    changed = asyncio.Event()
    unsubscribe = store.subscribe(changed.set)

    def done() -> dict[str, Job] | None:
        model = conn.model
        jobs = {j: model.jobs.get(j) for j in job_ids}
        if model.state is not LinkState.CONNECTED:
            return {j: job for j, job in jobs.items() if job is not None}
        # A job gone from QEMU without an event (dismissed by someone else) is finished too.
        if all(job is not None and (job.result is not None or job.finished) for job in jobs.values()):
            return {j: job for j, job in jobs.items() if job is not None}
        return None

    try:
        async with asyncio.timeout(timeout):
            while (result := done()) is None:
                changed.clear()
                # The poller also refreshes while jobs run; the timeout guards a missed event.
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    pass
            return result
    finally:
        unsubscribe()
