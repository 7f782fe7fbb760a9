"""The service's scheduled runs: each policy with a ``schedule`` runs at its times, as a client of
the service's own socket for its VM (so its commands are ordered, audited and locked like every
other client's), and every run that needs telling is sent where the policy's messages go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from tui.core.chains.policy import Policy
from tui.core.config import Config
from tui.core.ledger.points_repository import PointsLedger
from tui.service.notify import Notifier, schedule_notices, target_for
from tui.service.scheduler import OnMessage, RunOne, Scheduler, run_and_prune
from tui.session import LaunchOptions, Session

log = logging.getLogger("bitmap-tui.serve")


class ScheduledRuns:
    """The schedules of one config, started and restarted (a reload) by the service."""

    def __init__(self, config_path: str | None, ledger_path: Path) -> None:
        self.config_path = config_path
        self.ledger_path = ledger_path
        self.notifier = Notifier()
        self._task: asyncio.Task[None] | None = None
        self._ledger: PointsLedger | None = None

    def start(self, config: Config) -> None:
        """Run ``config``'s schedules (none scheduled: nothing runs, no ledger is opened)."""
        scheduled = [p for p in config.policies.values() if p.schedule]
        if not scheduled:
            return
        self._ledger = PointsLedger(self.ledger_path)
        scheduler = Scheduler(self._ledger, scheduled, self._run_one(config),
                              on_event=schedule_notices(self.notifier, config.service))
        self._task = asyncio.create_task(scheduler.run(), name="schedules")
        log.info("%d scheduled policy(ies); ledger %s", len(scheduled), self.ledger_path)

    async def stop(self) -> None:
        """Stop the schedules (a run going on is ended and recorded as stopped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _run_one(self, config: Config) -> RunOne:
        async def run_one(policy: Policy) -> str:
            session = Session(LaunchOptions(config=self.config_path,
                                            ledger=str(self.ledger_path)), config)
            fleet = await session.connect([policy.connection])
            try:
                conn = fleet.connections[policy.connection]
                with PointsLedger(self.ledger_path) as ledger:
                    return await run_and_prune(conn, ledger, policy, self._tell(config))
            finally:
                await fleet.stop()
                session.close()

        return run_one

    def _tell(self, config: Config) -> OnMessage:
        def tell(policy: Policy, title: str, body: str) -> None:
            log.info("%s", title)
            self.notifier.send(target_for(config.service, policy), title, body)

        return tell
