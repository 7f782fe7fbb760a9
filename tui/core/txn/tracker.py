"""Send a prepared transaction and follow its jobs in the Store until every one has ended.

Usage (the CLI, the composer screen and the backup ledger all do this)::

    prepared = prepare(txn, conn.model)             # checks; refuse on prepared.errors
    run = TransactionRun(conn, prepared)
    verdict = await run.run()                       # send, follow, verdict
    # or: await run.send(); ...; run.jobs() for live progress; verdict = await run.wait()

Results come only from the Store (QMP events reduced by the reducer: ``JobResult``), never from
polling QEMU here. Bitmap outcomes are checked against real counts (and sha256 where QEMU has
``x-debug-block-dirty-bitmap-sha256``) read before sending and after the last job ended, and
against what was seen while the jobs ran: how much each job had left to copy when it ended, and
the writes QEMU recorded during the job in the anonymous bitmap next to the frozen one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from typing import Any

from tui.core.base.errors import BitmapTuiError, ConnectError, QMPCommandError, RefusedError
from tui.core.base.format import human_bytes
from tui.core.model import reducer
from tui.core.model.state import ConnectionModel, Job, JobResult, LinkState
from tui.core.qmp.link import Link
from tui.core.txn.checks import Prepared, prepare
from tui.core.txn.model import Transaction
from tui.core.txn.verdict import (
    LOST,
    NOT_KNOWN,
    BackupInfo,
    BitmapVerdict,
    JobVerdict,
    Verdict,
    backups_of,
    counts_agree,
    decide,
)

# A job whose record says it is gone (status null) without its end event is given this long for
# the event to arrive (the poll and the event pump race) before it counts as lost.
END_EVENT_GRACE = 3.0
# While jobs run, the bitmaps are read this often to see the writes made during the jobs.
DURING_SAMPLE_INTERVAL = 1.0
# After a lost reply, how long to wait for the link to come back to ask QEMU for the jobs.
RESUME_WAIT = 30.0


class Sent(Enum):
    """What sending a transaction did."""

    #: QEMU accepted it: its jobs run (or it had none).
    SENT = "sent"
    #: QEMU or a pre-flight check said no: nothing happened (QEMU's prepare phase is atomic).
    REFUSED = "refused"
    #: The link dropped or timed out around the command: QEMU may be running the jobs.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The answer of :meth:`TransactionRun.send`, with the reason when it was not sent."""

    state: Sent
    reason: str = ""

    @property
    def sent(self) -> bool:
        return self.state is Sent.SENT


@dataclass(frozen=True, slots=True)
class JobView:
    """One job of the transaction as the Store shows it now (for a live view)."""

    job_id: str
    label: str
    target: str
    status: str
    current: int
    total: int
    result: str | None
    error: str | None

    @property
    def progress(self) -> float:
        if self.total <= 0:
            return 1.0 if self.result == "completed" else 0.0
        return max(0.0, min(1.0, self.current / self.total))


@dataclass(frozen=True, slots=True)
class Sample:
    count: int
    sha256: str | None


class TransactionRun:
    """One transaction sent on one connection and followed until its jobs ended."""

    def __init__(self, conn: Link, prepared: Prepared,
                 *, on_change: Callable[[], None] | None = None) -> None:
        self.conn = conn
        self.prepared = prepared
        self.txn = prepared.transaction
        self.on_change = on_change
        self.backups: list[BackupInfo] = backups_of(self.txn, self.model)
        #: True once QEMU accepted it; None while its outcome is unknown (reply lost).
        self.accepted: bool | None = False
        self.error: str | None = None
        self.sent_at: float | None = None
        self.verdict: Verdict | None = None
        self._before: dict[tuple[str, str], Sample] = {}
        self._gone_since: dict[str, float] = {}
        # (node, bitmap) → the most bytes seen dirtied while its job ran
        self._written_during: dict[tuple[str, str], int] = {}

    @property
    def model(self) -> ConnectionModel:
        return self.conn.store.connection(self.conn.name)

    @property
    def job_ids(self) -> list[str]:
        return [b.job_id for b in self.backups]

    # ------------------------------------------------------------------ sending

    def _watched_bitmaps(self) -> list[tuple[str, str]]:
        keys = [(b.node, b.bitmap) for b in self.backups if b.node and b.bitmap]
        for a in self.txn.actions:
            if a.type == "block-dirty-bitmap-clear":
                keys.append((str(a.data.get("node")), str(a.data.get("name"))))
        return list(dict.fromkeys(keys))

    async def _sample(self) -> dict[tuple[str, str], Sample]:
        try:
            await self.conn.refresh_nodes()
        except BitmapTuiError:
            # No fresh counts (connection gone): better unmeasured than measured on stale state.
            return {}
        model = self.model
        have_sha = "x-debug-block-dirty-bitmap-sha256" in model.commands
        out: dict[tuple[str, str], Sample] = {}
        for node, name in self._watched_bitmaps():
            n = model.nodes.get(node)
            bm = n.bitmap(name) if n is not None else None
            if bm is None:
                continue
            sha = None
            if have_sha:
                with contextlib.suppress(BitmapTuiError):
                    reply = await self.conn.execute(
                        "x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name})
                    sha = reply.get("sha256") if isinstance(reply, dict) else None
            out[(node, name)] = Sample(bm.count, sha)
        return out

    async def send(self) -> SendOutcome:
        """Send the transaction: :attr:`Sent.SENT`; :attr:`Sent.REFUSED` when QEMU or the app
        refused it (no job was started: QEMU's prepare phase is atomic); :attr:`Sent.UNKNOWN`
        when the link dropped or timed out around the command (QEMU may be running the jobs).
        Unless sent, :attr:`error` says why and the verdict is not accepted."""
        if self.prepared.errors:
            return self._not_sent(Sent.REFUSED, "pre-flight checks failed: " + "; ".join(
                f.message for f in self.prepared.errors))
        self._before = await self._sample()
        # Forget finished jobs of earlier runs that used the same ids: their results would be
        # taken for this run's.
        for jid in self.job_ids:
            old = self.model.jobs.get(jid)
            if old is not None and old.finished:
                self.conn.store.update(self.conn.name, partial(reducer.dismiss_job, job_id=jid))
        try:
            await self.conn.execute("transaction", self.txn.to_qmp())
        except QMPCommandError as exc:
            return self._not_sent(Sent.REFUSED, f"QEMU refused the transaction: {exc.desc}")
        except (RefusedError, ConnectError) as exc:  # read-only, audit, not connected: not sent
            return self._not_sent(Sent.REFUSED, str(exc))
        except BitmapTuiError as exc:  # lost or timed out around the command
            return self._not_sent(Sent.UNKNOWN, str(exc))
        self._accept()
        return SendOutcome(Sent.SENT)

    def _accept(self) -> None:
        self.accepted = True
        self.error = None
        self.verdict = None
        self.sent_at = time.monotonic()
        for b in self.backups:
            if b.node:
                self.conn.note_job_node(b.job_id, b.node)
        self._notify()

    def _not_sent(self, state: Sent, error: str) -> SendOutcome:
        unknown = state is Sent.UNKNOWN
        self.error = error
        self.accepted = None if unknown else False
        jobs = tuple(JobVerdict(b.job_id, b.device, b.node, b.target, NOT_KNOWN, None, b.image,
                                b.sync, b.bitmap) for b in self.backups) if unknown else ()
        self.verdict = Verdict(self.txn.completion_mode, self.accepted, error, jobs=jobs,
                               checks=tuple(str(f) for f in self.prepared.findings))
        self._notify()
        return SendOutcome(state, error)

    async def _jobs_when_back(self, timeout: float | None) -> list[Any] | None:
        """QEMU's ``query-jobs`` once the link answers again (None: not within ``timeout``)."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while end is None or loop.time() < end:
            if self.model.state is LinkState.CONNECTED:
                with contextlib.suppress(BitmapTuiError):
                    listed = await self.conn.execute("query-jobs")
                    return listed if isinstance(listed, list) else []
            await asyncio.sleep(0.1)
        return None

    async def resume(self, timeout: float | None) -> bool:
        """After a lost reply (outcome unknown): wait up to ``timeout`` for the link to come
        back, then ask QEMU for the transaction's jobs by id. Any of them listed: QEMU accepted
        it, and :meth:`wait` follows the jobs (True). None listed, or no link: still unknown."""
        if self.accepted is not None:
            return bool(self.accepted)
        listed = await self._jobs_when_back(timeout)
        if listed is None:
            return False
        ids = {j.get("id") for j in listed if isinstance(j, dict)}
        if not ids & set(self.job_ids):
            if self.job_ids:
                self._not_sent(Sent.UNKNOWN, f"{self.error}; the link came back but query-jobs "
                               "lists none of its jobs: they may have ended while it was down")
            return False
        self._accept()
        return True

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ following

    def jobs(self) -> list[JobView]:
        """The transaction's jobs as the Store shows them now."""
        model = self.model
        out = []
        for b in self.backups:
            job = model.jobs.get(b.job_id)
            if job is None:
                out.append(JobView(b.job_id, b.label, b.target, "created" if self.accepted else "-",
                                   0, 0, None, None))
                continue
            out.append(JobView(b.job_id, b.label, b.target, job.status, job.current, job.total,
                               self._result_of(job), job.error))
        return out

    def _result_of(self, job: Job) -> str | None:
        if job.result is not None:
            return job.result.value
        if job.status in ("null", "concluded"):
            since = self._gone_since.setdefault(job.id, time.monotonic())
            if time.monotonic() - since > END_EVENT_GRACE:
                return LOST
        return None

    def observe(self) -> None:
        """Note the writes QEMU recorded so far for each running job with a bitmap: the count of
        the anonymous recording bitmap it keeps next to the frozen one on the source node (the
        smallest, if two jobs of this transaction keep one there)."""
        model = self.model
        for b in self.backups:
            job = model.jobs.get(b.job_id)
            node = model.nodes.get(b.node or "")
            if not b.bitmap or node is None or job is None or job.finished:
                continue
            counts = [bm.count for bm in node.bitmaps if bm.anonymous and bm.recording]
            if counts:
                key = (node.node_name, b.bitmap)
                self._written_during[key] = max(self._written_during.get(key, 0), min(counts))

    def written_during(self, node: str, bitmap: str) -> int | None:
        """The most bytes seen dirtied on ``node`` while the job using ``bitmap`` ran."""
        return self._written_during.get((node, bitmap))

    def ended(self) -> bool:
        """True once every job of the transaction has a result."""
        return bool(self.accepted) and all(j.result is not None for j in self.jobs())

    async def wait(self, timeout: float | None = None) -> Verdict:
        """Wait until every job ended (or ``timeout``; unfinished jobs then count as lost), then
        read the bitmaps again and return the verdict."""
        if not self.accepted:
            assert self.verdict is not None, "send() first"
            return self.verdict
        changed = asyncio.Event()
        unsubscribe = self.conn.store.subscribe(changed.set)
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        next_sample = loop.time()
        try:
            while not self.ended():
                changed.clear()
                self.observe()
                self._notify()
                if loop.time() >= next_sample:
                    next_sample = loop.time() + DURING_SAMPLE_INTERVAL
                    with contextlib.suppress(BitmapTuiError):
                        await self.conn.refresh_nodes()
                    continue
                left = 0.5 if end is None else min(0.5, end - loop.time())
                if left <= 0:
                    break
                # The timeout also lets the lost-job grace period elapse with no store change.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            unsubscribe()
        after = await self._sample()
        self.verdict = self._verdict(after)
        self._notify()
        return self.verdict

    async def run(self, timeout: float | None = None) -> Verdict:
        """Send, then wait: the whole thing."""
        if not (await self.send()).sent:
            assert self.verdict is not None
            return self.verdict
        return await self.wait(timeout)

    def _verdict(self, after: dict[tuple[str, str], Sample]) -> Verdict:
        results: dict[str, tuple[str, str | None]] = {}
        model = self.model
        for view in self.jobs():
            job = model.jobs.get(view.job_id)
            error = view.error
            if view.result is None or view.result == LOST:
                results[view.job_id] = (LOST, error or "the job's end was not seen (connection "
                                                       "lost or timed out): its image is not trusted")
            else:
                if view.result == JobResult.CANCELLED.value and job is not None and job.io_errors:
                    error = error or job.last_io_error
                results[view.job_id] = (view.result, error)
        verdict = decide(self.txn, model, results, copied_all={
            jid: left == 0 for jid, left in self._left_to_copy().items()})
        bitmaps = tuple(self._measured(b, after) for b in verdict.bitmaps)
        extra = tuple(
            f"check bitmap {b.name} on {b.node}: expected {b.outcome}, but its dirty count went "
            f"from {human_bytes(b.count_before)} to {human_bytes(b.count_after)}"
            + (f" ({human_bytes(b.written_during)} written during the job)"
               if b.written_during else "")
            for b in bitmaps if b.verified is False
        )
        return replace(verdict, bitmaps=bitmaps, next=verdict.next + extra,
                       checks=tuple(str(f) for f in self.prepared.findings))

    def _left_to_copy(self) -> dict[str, int]:
        """Job id → bytes it had not copied when it ended (from its end event's len and offset).
        Left out when unknown: no end seen, or a length of 0 for a bitmap that had bits (the job
        ended before it had counted what to copy)."""
        out = {}
        for b in self.backups:
            job = self.model.jobs.get(b.job_id)
            if job is None or job.result is None:
                continue
            before = self._before.get((b.node or "", b.bitmap or ""))
            if job.total == 0 and before is not None and before.count > 0:
                continue
            out[b.job_id] = max(0, job.total - job.current)
        return out

    def _measured(self, b: BitmapVerdict, after: dict[tuple[str, str], Sample]) -> BitmapVerdict:
        before = self._before.get((b.node, b.name))
        now = after.get((b.node, b.name))
        if before is None or now is None:
            return b
        written = self._written_during.get((b.node, b.name), 0)
        left = self._left_to_copy().get(b.cause, 0)
        same_hash = before.sha256 is not None and before.sha256 == now.sha256
        ok = counts_agree(b.outcome, before.count, now.count, written_during=written,
                          left_to_copy=left, same_hash=same_hash)
        return replace(b, count_before=before.count, count_after=now.count, verified=ok,
                       written_during=written, left_to_copy=left if b.partial else None)


async def apply_transaction(
    conn: Link,
    txn: Transaction,
    *,
    accept_warnings: bool = False,
    timeout: float | None = None,
    on_change: Callable[[], None] | None = None,
) -> Verdict:
    """Check, send and follow ``txn`` on ``conn``; the verdict. The one call a scheduler needs.

    Refused before sending (``verdict.accepted`` False, exit code 2) on a pre-flight error, or a
    warning unless ``accept_warnings``; the findings are in ``verdict.checks``.
    """
    prepared = prepare(txn, conn.store.connection(conn.name))
    checks = tuple(str(f) for f in prepared.findings)
    if prepared.errors:
        return Verdict(txn.completion_mode, False,
                       f"pre-flight check failed: {prepared.errors[0].message}", checks=checks)
    if prepared.warnings and not accept_warnings:
        return Verdict(txn.completion_mode, False,
                       f"warning not accepted: {prepared.warnings[0].message}", checks=checks)
    return await TransactionRun(conn, prepared, on_change=on_change).run(timeout)
