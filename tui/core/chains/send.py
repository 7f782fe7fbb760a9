"""Sending a policy run's transaction through the transaction engine (:mod:`tui.core.txn`).

The chains code needs one distinction the engine folds into "refused": whether the transaction
certainly did nothing (QEMU's prepare refused it, or a pre-flight check did) or whether its fate
is unknown (the connection dropped or timed out around the command). The first raises
:class:`TransactionRefused`; the second :class:`tui.core.base.errors.ConnectionLostError`.
"""

from __future__ import annotations

from typing import Any

from tui.core.base.errors import BitmapTuiError, ConnectionLostError
from tui.core.model.state import JobResult
from tui.core.txn.checks import prepare
from tui.core.txn.model import Action, Transaction
from tui.core.txn.targets import QMPConn
from tui.core.txn.tracker import TransactionRun
from tui.core.txn.verdict import LOST

# The engine's error prefixes for refusals where nothing was started.
_REFUSED_PREFIXES = ("QEMU refused the transaction", "pre-flight checks failed")


class TransactionRefused(BitmapTuiError):
    """Nothing of the transaction happened in QEMU."""


class Sender:
    """One transaction: :meth:`send` it, then :meth:`wait` for every job's result."""

    def __init__(self, conn: QMPConn, actions: list[dict[str, Any]], mode: str) -> None:
        self.conn = conn
        txn = Transaction(tuple(Action(a["type"], dict(a["data"])) for a in actions), mode)
        self.run = TransactionRun(conn, prepare(txn, conn.model, fill_job_ids=False))

    async def send(self) -> None:
        if await self.run.send():
            return
        error = self.run.error or "the transaction was not sent"
        if error.startswith(_REFUSED_PREFIXES):
            raise TransactionRefused(error.split(": ", 1)[-1])
        raise ConnectionLostError(error)

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
