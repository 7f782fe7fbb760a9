"""Runs each policy at the times its ``schedule`` (a cron expression) names.

One task per scheduled policy. At each slot (plus up to ``jitter`` random seconds) it starts the
policy's run (the caller's coroutine, which takes the VM's run lock), unless that policy's
previous run is still going: then the slot is *skipped* and recorded. Every slot's outcome is a
``scheduled_runs`` row in the ledger, so a service that was down learns at start that a slot went
by: it then runs once (not once per missed slot).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from croniter import croniter

from tui.core.base.text import shown
from tui.core.chains.policy import Policy
from tui.core.chains.prune import prune
from tui.core.chains.run import run_policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState
from tui.core.txn.targets import QMPConn
from tui.service.notify import run_message

log = logging.getLogger(__name__)

# What a run of one policy returns: "ok", or what went wrong ("failed: ...", "refused: ...").
RunOne = Callable[[Policy], Awaitable[str]]
# Told of each missed or skipped slot: (policy, what happened).
OnEvent = Callable[[Policy, str], None]


def next_slot(policy: Policy, after: float) -> float:
    """The first time after ``after`` that ``policy``'s schedule names."""
    assert policy.schedule is not None
    return float(croniter(policy.schedule, after).get_next(float))


def missed_slot(ledger: Ledger, policy: Policy, now: float) -> float | None:
    """The newest slot before ``now`` that has no run recorded, when a run was recorded before it
    (a policy that never ran has missed nothing); None otherwise."""
    assert policy.schedule is not None
    runs = ledger.scheduled_runs(policy.name, limit=1)
    newest = float(croniter(policy.schedule, now).get_prev(float))
    if runs and runs[0].slot < newest:
        return newest
    return None


@dataclass
class Scheduler:
    """The schedules of ``policies``: ``await run()`` until cancelled.

    ``run_one`` runs one policy once (with the run lock) and returns its result; ``clock`` is
    the wall clock (seconds since the epoch)."""

    ledger: Ledger
    policies: Iterable[Policy]
    run_one: RunOne
    clock: Callable[[], float] = time.time
    on_event: OnEvent | None = None
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def run(self) -> None:
        scheduled = [p for p in self.policies if p.schedule]
        loops = [asyncio.create_task(self._policy_loop(p), name=f"schedule {p.name}")
                 for p in scheduled]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in [*loops, *self._running.values()]:
                task.cancel()
            await asyncio.gather(*loops, *self._running.values(), return_exceptions=True)

    async def _policy_loop(self, policy: Policy) -> None:
        now = self.clock()
        missed = missed_slot(self.ledger, policy, now)
        if missed is not None:
            self._event(policy, f"missed the run due at {_when(missed)} (the service was "
                                "down): running it now")
            self._start(policy, missed)
        after = now
        while True:
            slot = next_slot(policy, after)
            delay = slot - self.clock() + (random.uniform(0, policy.jitter) if policy.jitter else 0)
            await asyncio.sleep(max(delay, 0))
            after = slot
            task = self._running.get(policy.name)
            if task is not None and not task.done():
                reason = "skipped: the run before was still going"
                self.ledger.start_scheduled_run(policy.name, slot, reason)
                self._event(policy, f"{reason} at {_when(slot)}")
                continue
            self._start(policy, slot)

    def _start(self, policy: Policy, slot: float) -> None:
        run_id = self.ledger.start_scheduled_run(policy.name, slot)
        self._running[policy.name] = asyncio.create_task(self._one(policy, run_id),
                                                         name=f"run {policy.name}")

    async def _one(self, policy: Policy, run_id: int) -> None:
        try:
            result = await self.run_one(policy)
        except asyncio.CancelledError:
            self.ledger.end_scheduled_run(run_id, "failed: the service stopped during the run")
            raise
        except Exception as exc:  # one policy's failure never stops the schedules
            log.exception("scheduled run of %s", shown(policy.name))
            result = f"failed: {exc}"
        self.ledger.end_scheduled_run(run_id, result)

    def _event(self, policy: Policy, what: str) -> None:
        log.warning("policy %s: %s", shown(policy.name), what)
        if self.on_event is not None:
            self.on_event(policy, what)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


# Told of a run's message (title, body), see tui.service.notify.run_message.
OnMessage = Callable[[Policy, str, str], None]


async def run_and_prune(conn: QMPConn, ledger: PointsLedger, policy: Policy,
                        on_message: OnMessage | None = None) -> str:
    """One scheduled run: the backup, then with ``prune: auto`` a prune after a run that left
    every drive VALID. "ok", or what went wrong in one line. ``on_message`` is told when an
    image is not VALID or a chain broke."""
    result = await run_policy(conn, ledger, policy)
    message = run_message(result)
    if message is not None and on_message is not None:
        on_message(policy, *message)
    if result.refused:
        return f"refused: {result.refused}"
    if result.exit_code != 0:
        bad = ", ".join(f"{d.drive} {str(d.state).upper()}" for d in result.drives
                        if d.state is not ImageState.VALID)
        return f"failed: {bad}"
    if policy.prune == "auto":
        pruned = prune(ledger, policy)
        if not pruned.ok:
            return "failed: prune: " + "; ".join(pruned.failed)
    return "ok"
