"""Resolve what the ledger does not know yet from what QEMU still remembers.

Backup jobs are started with ``auto-dismiss: false``, so a job that ended while the app was away
(killed, disconnected) stays in ``query-jobs`` as ``concluded`` with its error until the app has
recorded the outcome and dismissed it. A job that is gone (QEMU restarted) has an UNKNOWN outcome:
its image is never trusted and its drive's next backup is a full one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui.chains.ledger import JobState, Ledger, TxnState, default_path
from tui.chains.targets import QMPConn, image_size, release_target
from tui.errors import BitmapTuiError, QMPCommandError
from tui.model.parse import parse_jobs
from tui.model.state import Job, LinkState

GONE = "the job is gone from QEMU (QEMU restarted, or the transaction never started)"


@dataclass
class ReconcileReport:
    """What one reconciliation did."""

    resolved: dict[str, JobState] = field(default_factory=dict)  # job id → outcome
    running: list[str] = field(default_factory=list)  # jobs still running in QEMU
    abandoned: list[int] = field(default_factory=list)  # transactions interrupted before sending


def job_state_of(job: Job) -> JobState | None:
    """A concluded QEMU job → its ledger outcome (None while it still runs)."""
    if job.status not in ("concluded", "null"):
        return None
    if job.error:
        return JobState.CANCELLED if "cancel" in job.error.lower() else JobState.FAILED
    return JobState.COMPLETED


async def query_jobs(conn: QMPConn) -> dict[str, Job]:
    """Every job QEMU still has, fresh (not the Store's, which may hold a stale LOST result).

    QEMU < 3.0 has no query-jobs: its block jobs come from query-block-jobs.
    """
    cmds = conn.model.commands
    if not cmds or "query-jobs" in cmds:
        return parse_jobs(await conn.execute("query-jobs"), None)
    return parse_jobs(None, await conn.execute("query-block-jobs"))


async def finish_job(conn: QMPConn, ledger: Ledger, txn_id: int, job_id: str) -> None:
    """After a job's outcome is recorded: note image sizes, dismiss the job, detach targets."""
    for im in ledger.images(txn_id=txn_id):
        if im.job_id != job_id:
            continue
        if im.target_node and im.size is None:
            ledger.set_image_size(im.id, await image_size(conn, im.target_node))
        with contextlib.suppress(BitmapTuiError):
            await release_target(conn, im.target_node, im.file_node)
    with contextlib.suppress(QMPCommandError):
        await conn.execute("job-dismiss", {"id": job_id})


async def reconcile(
    conn: QMPConn, ledger: Ledger, *, wait: bool = False, timeout: float | None = None
) -> ReconcileReport:
    """Resolve every open transaction of this connection from QEMU's ``query-jobs``.

    With ``wait``, jobs still running are waited for (polling) until they conclude.
    """
    report = ReconcileReport()
    for txn in ledger.open_txns(conn.name):
        if txn.state is TxnState.PLANNED:
            # Interrupted while creating targets: nothing was sent, only nodes may be attached.
            for im in ledger.images(txn_id=txn.id):
                with contextlib.suppress(BitmapTuiError):
                    await release_target(conn, im.target_node, im.file_node)
            keep = [im.id for im in ledger.images(txn_id=txn.id) if im.resets_bitmap]
            ledger.mark_refused(txn.id, "interrupted before the transaction was sent", keep_reset=keep)
            report.abandoned.append(txn.id)
            continue
        pending = [j for j in ledger.jobs(txn.id) if j.state is JobState.PENDING]
        async with asyncio.timeout(timeout if wait else None):
            while pending:
                qjobs = await query_jobs(conn)
                still: list[str] = []
                for job in pending:
                    q = qjobs.get(job.job_id)
                    outcome = job_state_of(q) if q is not None else JobState.UNKNOWN
                    if outcome is None:
                        still.append(job.job_id)
                        continue
                    ledger.record_job(conn.name, job.job_id, outcome, q.error if q else GONE)
                    report.resolved[job.job_id] = outcome
                    await finish_job(conn, ledger, txn.id, job.job_id)
                pending = [j for j in pending if j.job_id in still]
                if not wait:
                    report.running.extend(still)
                    break
                if pending:
                    await asyncio.sleep(0.2)
        ledger.settle(txn.id)
    return report


def reconcile_on_connect(conn: QMPConn, ledger: Ledger, *,
                         on_done: Callable[[ReconcileReport], None] | None = None) -> Callable[[], None]:
    """Reconcile every time the connection becomes connected (start and every reconnect).

    Returns an unsubscribe function. Errors are swallowed: the next reconnect tries again.
    """
    store = conn.store  # type: ignore[attr-defined]
    was_connected = False
    tasks: set[asyncio.Task[None]] = set()  # keep a reference until each task ends

    async def run() -> None:
        with contextlib.suppress(BitmapTuiError):
            report = await reconcile(conn, ledger)
            if on_done is not None:
                on_done(report)

    def changed() -> None:
        nonlocal was_connected
        model = store.state.connections.get(conn.name)
        now = model is not None and model.state is LinkState.CONNECTED and model.synced
        if now and not was_connected:
            task = asyncio.get_running_loop().create_task(run(), name=f"reconcile:{conn.name}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        was_connected = now

    changed()
    return store.subscribe(changed)


def watch_fleet(fleet: Any, ledger: Ledger | None = None) -> Callable[[], None]:
    """Reconcile every connection of ``fleet`` on each connect (the app calls this at start).

    Without a ``ledger``, the default one is used only if it exists (no ledger: nothing to do,
    and no file is created). Returns a function that stops watching.
    """
    if ledger is None:
        if not default_path().exists():
            return lambda: None
        ledger = Ledger()
    unsubs = [reconcile_on_connect(conn, ledger) for conn in fleet.connections.values()]

    def stop() -> None:
        for unsub in unsubs:
            unsub()

    return stop
