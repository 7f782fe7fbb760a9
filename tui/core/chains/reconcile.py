"""Resolve what the ledger does not know yet from what QEMU still remembers.

Backup jobs are started with ``auto-dismiss: false``, so a job that ended while the app was away
(killed, disconnected) stays in ``query-jobs`` as ``concluded`` with its error until the app has
recorded the outcome and dismissed it. A job that is gone (QEMU restarted) has an UNKNOWN outcome:
its image is never trusted and its drive's next backup is a full one.

A completed job's image counts only once its target was flushed and detached by us (the
``blockdev-del`` of the nodes we named). A run killed between recording the outcome and releasing
the target leaves the nodes attached: reconcile detaches them, runs ``qemu-img check`` on the
image when it is on this machine, and only then lets it be VALID. A target whose nodes are gone
without us (QEMU restarted) was maybe never flushed: its image is UNKNOWN.

Only job ids this ledger issued (``bt.<ledger id>.``) are looked up in QEMU: a job of another
ledger (or of an older release, whose ids were not unique) is never taken for ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.core.base.errors import BitmapTuiError, QMPCommandError
from tui.core.chains.verify import check_image
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageRow, ImageState, JobState, TxnState
from tui.core.model.parse import parse_jobs, result_of
from tui.core.model.state import Job, LinkState
from tui.core.txn.targets import QMPConn, file_identity, image_size, is_local, release_target

GONE = "the job is gone from QEMU (QEMU restarted, or the transaction never started)"
NOT_OURS = "the job id was not issued by this ledger (an older release's id): its outcome is not trusted"
LOST_TARGET = ("its target was not released by us (QEMU restarted or the node was removed): "
               "the image may never have been flushed")


@dataclass
class ReconcileReport:
    """What one reconciliation did."""

    resolved: dict[str, JobState] = field(default_factory=dict)  # job id → outcome
    running: list[str] = field(default_factory=list)  # jobs still running in QEMU
    abandoned: list[int] = field(default_factory=list)  # transactions interrupted before sending


def job_state_of(job: Job) -> JobState | None:
    """A concluded QEMU job → its ledger outcome (None while it still runs)."""
    result = result_of(job.status, job.error)
    return JobState.of(result) if result is not None else None


async def query_jobs(conn: QMPConn) -> dict[str, Job]:
    """Every job QEMU still has, fresh (not the Store's, which may hold a stale LOST result).

    QEMU < 3.0 has no query-jobs: its block jobs come from query-block-jobs.
    """
    cmds = conn.model.commands
    if not cmds or "query-jobs" in cmds:
        return parse_jobs(await conn.execute("query-jobs"), None)
    return parse_jobs(None, await conn.execute("query-block-jobs"))


async def release_image(conn: QMPConn, ledger: Ledger, im: ImageRow, *, check: bool) -> None:
    """Detach an image's target and record that it was released (or why it cannot be trusted).

    ``check``: run ``qemu-img check`` on a local image before it may count (reconcile: the run
    that wrote it did not finish). A QEMU refusal (node busy) leaves the image as it is.
    """
    if im.target_node and im.size is None:
        ledger.set_image_size(im.id, await image_size(conn, im.target_node))
    try:
        ours = await release_target(conn, im.target_node, im.file_node)
    except BitmapTuiError:
        return
    if not ours:
        ledger.resolve_unreleased(im.id, ImageState.UNKNOWN, LOST_TARGET)
        return
    st = file_identity(im.path) if is_local(conn) else None
    if st is not None:
        ledger.refresh_file_identity(im.id, st)
    if check and st is not None:
        res = await asyncio.to_thread(check_image, im.path)
        if not res.ok:
            ledger.resolve_unreleased(im.id, ImageState.INVALID, f"qemu-img check: {res.detail}")
            return
    ledger.mark_released(im.id)


async def finish_job(conn: QMPConn, ledger: Ledger, txn_id: int, job_id: str, *,
                     check: bool = False) -> None:
    """After a job's outcome is recorded: note image sizes, detach targets, dismiss the job."""
    for im in ledger.images(txn_id=txn_id):
        if im.job_id == job_id and im.released is None:
            await release_image(conn, ledger, im, check=check)
    if ledger.issued(job_id):
        with contextlib.suppress(QMPCommandError):
            await conn.execute("job-dismiss", {"id": job_id})


async def finish_unreleased(conn: QMPConn, ledger: Ledger, txn_id: int) -> None:
    """Images whose job's outcome is recorded but whose target was never released (the run was
    killed in between): release and check them now."""
    done = {j.job_id for j in ledger.jobs(txn_id) if j.state is not JobState.PENDING}
    for im in ledger.images(txn_id=txn_id):
        if im.state is ImageState.PENDING and im.released is None and im.job_id in done:
            await release_image(conn, ledger, im, check=True)


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
                    if not ledger.issued(job.job_id):
                        ledger.record_job(conn.name, job.job_id, JobState.UNKNOWN, NOT_OURS)
                        report.resolved[job.job_id] = JobState.UNKNOWN
                        await finish_job(conn, ledger, txn.id, job.job_id)
                        continue
                    q = qjobs.get(job.job_id)
                    outcome = job_state_of(q) if q is not None else JobState.UNKNOWN
                    if outcome is None:
                        still.append(job.job_id)
                        continue
                    ledger.record_job(conn.name, job.job_id, outcome, q.error if q else GONE)
                    report.resolved[job.job_id] = outcome
                    await finish_job(conn, ledger, txn.id, job.job_id, check=True)
                pending = [j for j in pending if j.job_id in still]
                if not wait:
                    report.running.extend(still)
                    break
                if pending:
                    await asyncio.sleep(0.2)
        await finish_unreleased(conn, ledger, txn.id)
        ledger.settle(txn.id)
    return report


def reconcile_on_connect(conn: QMPConn, ledger: Ledger, *,
                         on_done: Callable[[ReconcileReport], None] | None = None) -> Callable[[], None]:
    """Reconcile every time the connection becomes connected (start and every reconnect).

    Returns an unsubscribe function. Errors are swallowed: the next reconnect tries again.
    """
    store = conn.store
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
    return store.subscribe_connection(conn.name, changed)


def watch_fleet(fleet: Any, ledger_path: Path) -> Callable[[], None]:
    """Reconcile every connection of ``fleet`` on each connect (the session starts this beside
    the console), and watch our chains' bitmaps for breaks
    (:func:`tui.core.chains.watch.watch_connection`).

    A ledger that does not exist has nothing to reconcile: nothing is watched and no file is
    created. Returns a function that stops watching.
    """
    if not ledger_path.exists():
        return lambda: None
    ledger = Ledger(ledger_path)
    from tui.core.chains.watch import watch_connection

    unsubs = [reconcile_on_connect(conn, ledger) for conn in fleet.connections.values()]
    # While the console runs, every break it sees in our chains' bitmaps is recorded.
    unsubs += [watch_connection(ledger, conn) for conn in fleet.connections.values()]

    def stop() -> None:
        for unsub in unsubs:
            unsub()

    return stop
