"""Sending a policy run's transaction through the transaction engine (:mod:`tui.core.txn`).

The engine's typed send outcome becomes the chains code's exceptions: a transaction that
certainly did nothing (QEMU's prepare refused it, or a pre-flight check did) raises
:class:`TransactionRefused`; one whose fate is unknown (the connection dropped or timed out around
the command) raises :class:`tui.core.base.errors.OutcomeUnknownError`.
"""

from __future__ import annotations

from typing import Any

from tui.core.base.errors import OutcomeUnknownError, RefusedError
from tui.core.model.state import JobResult
from tui.core.txn.checks import prepare
from tui.core.txn.model import Action, Transaction
from tui.core.txn.targets import QMPConn
from tui.core.txn.tracker import Sent, TransactionRun
from tui.core.txn.verdict import LOST


class TransactionRefused(RefusedError):
    """Nothing of the transaction happened in QEMU."""


class Sender:
    """One transaction: :meth:`send` it, then :meth:`wait` for every job's result."""

    def __init__(self, conn: QMPConn, actions: list[dict[str, Any]], mode: str) -> None:
        self.conn = conn
        txn = Transaction(tuple(Action(a["type"], dict(a["data"])) for a in actions), mode)
        self.run = TransactionRun(conn, prepare(txn, conn.model, fill_job_ids=False))

    async def send(self) -> None:
        outcome = await self.run.send()
        if outcome.state is Sent.REFUSED:
            raise TransactionRefused(outcome.reason)
        if outcome.state is Sent.UNKNOWN:
            raise OutcomeUnknownError(outcome.reason)

    async def wait(self, timeout: float | None = None) -> dict[str, tuple[JobResult | None, str | None]]:
        """Each job's result (None when its end was not seen: lost or timed out) and error."""
        verdict = await self.run.wait(timeout)
        out: dict[str, tuple[JobResult | None, str | None]] = {}
        for job in verdict.jobs:
            result = None if job.result == LOST else JobResult(job.result)
            out[job.job_id] = (result, job.error)
        return out


async def send_transaction(conn: QMPConn, actions: list[dict[str, Any]], mode: str) -> None:
    """Send a transaction that starts no jobs (the bitmap step of a grouped run)."""
    await Sender(conn, actions, mode).send()
