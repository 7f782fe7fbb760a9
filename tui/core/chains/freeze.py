"""Application-consistent points: freeze the guest's file systems around a backup's start.

A backup's point in time is the moment its transaction starts the jobs, so the guest is frozen
(``guest-fsfreeze-freeze``) just before the transaction is sent and thawed as soon as QEMU
accepted it. The thaw always runs, with a timeout, when the transaction fails, when the run is
cancelled (Ctrl-C), and when the freeze itself did not answer (it may have frozen the guest
anyway). A thaw the agent does not answer is written to it once more without waiting: the agent
handles one command at a time, so after a slow freeze it runs that thaw. The ledger records, per transaction, that the guest was frozen and whether it was seen
thawed; a thaw that could not be confirmed is retried before the next frozen backup on that
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from tui.core.base.errors import AgentError
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.repository import Ledger
from tui.core.qmp.agent import GuestAgent

FREEZE_TIMEOUT = 30.0  # a freeze flushes the guest's file systems: it may take a while
THAW_TIMEOUT = 10.0


class FreezeFailed(AgentError):
    """The guest could not be frozen (nothing was sent to QEMU)."""


@dataclass
class FreezeOutcome:
    frozen: int = 0  # file systems frozen
    thawed: bool = False
    detail: str = ""


async def thaw(agent: GuestAgent, timeout: float) -> str | None:
    """Thaw, bounded; None when done, else why not. Never raises, survives a cancellation."""

    async def attempt() -> str | None:
        try:
            await agent.thaw(timeout)
        except AgentError as exc:
            return f"{exc}; {await _post_thaw(agent)}"
        return None

    task = asyncio.ensure_future(attempt())
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # finish the thaw first; the cancellation goes on afterwards
    result = task.result()
    if cancelled:
        current = asyncio.current_task()
        if current is not None:
            current.cancel()
    return result


async def _post_thaw(agent: GuestAgent) -> str:
    """After an unanswered thaw: write one more, not waiting for the agent (busy with a slow
    freeze, it runs it when done). What to tell the operator either way."""
    check = "check with guest-fsfreeze-status"
    try:
        await agent.post("guest-fsfreeze-thaw")
    except AgentError as exc:
        return f"the guest may still be frozen and no thaw could be written ({exc}): {check}"
    return (f"the guest may still be frozen: a thaw was written to the agent and runs when it "
            f"answers again; {check}")


async def thaw_leftovers(ledger: Ledger, connection: str, address: str,
                         timeout: float | None = None) -> list[int]:
    """Thaw what an earlier run froze and could not confirm thawed; the transactions it did."""
    timeout = THAW_TIMEOUT if timeout is None else timeout
    if not isinstance(ledger, PointsLedger):
        return []
    left = ledger.unthawed(connection)
    if not left:
        return []
    agent = GuestAgent(address, timeout=timeout)
    try:
        why = await thaw(agent, timeout)
    finally:
        await agent.close()
    if why is not None:
        raise FreezeFailed(f"the guest may still be frozen from transaction {left[-1]} and the "
                           f"thaw failed: {why}")
    for txn_id in left:
        ledger.record_thawed(txn_id, "thawed by a later run")
    return left


@contextlib.asynccontextmanager
async def frozen_guest(ledger: Ledger, txn_id: int, address: str, *,
                       step: Callable[[str], None] | None = None,
                       freeze_timeout: float | None = None,
                       thaw_timeout: float | None = None) -> AsyncIterator[FreezeOutcome]:
    """Freeze for the body (which sends the transaction); thaw on any way out of it."""
    freeze_timeout = FREEZE_TIMEOUT if freeze_timeout is None else freeze_timeout
    thaw_timeout = THAW_TIMEOUT if thaw_timeout is None else thaw_timeout
    say = step or (lambda _text: None)
    record = ledger if isinstance(ledger, PointsLedger) else None
    agent = GuestAgent(address, timeout=thaw_timeout)
    outcome = FreezeOutcome()
    try:
        say("freezing the guest's file systems")
        if record is not None:  # before the freeze: a kill while frozen leaves the record
            record.record_frozen(txn_id, True, "freeze sent")
        try:
            outcome.frozen = await agent.freeze(freeze_timeout)
        except asyncio.CancelledError:
            await thaw(agent, thaw_timeout)  # interrupted while freezing: it may have frozen
            raise
        except AgentError as exc:
            why = await thaw(agent, thaw_timeout)  # the freeze may have happened all the same
            if record is not None and why is None:
                record.record_frozen(txn_id, False, f"freeze failed: {exc}")
                record.record_thawed(txn_id)
            elif record is not None:  # maybe frozen: the next frozen run thaws first
                record.record_frozen(txn_id, True, f"freeze failed ({exc}), thaw failed ({why})")
            raise FreezeFailed(f"freezing the guest failed: {exc}"
                               + (f"; the thaw failed too: {why}" if why else "")) from None
        if record is not None:
            record.record_frozen(txn_id, True, f"{outcome.frozen} file systems frozen")
        try:
            yield outcome
        finally:
            say("thawing the guest's file systems")
            why = await thaw(agent, thaw_timeout)
            outcome.thawed = why is None
            outcome.detail = why or ""
            if record is not None and why is None:
                record.record_thawed(txn_id)
    finally:
        await agent.close()
