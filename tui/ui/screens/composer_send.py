"""The QEMU side of the composer's send: create the planned target images, run the transaction,
and once its jobs ended release the targets it created (no widget here)."""

from __future__ import annotations

from tui.core.base.errors import NotConnectedError
from tui.core.model.state import ConnectionModel
from tui.core.qmp.connection import Connection
from tui.core.qmp.fleet import Fleet
from tui.core.txn import TransactionRun, Verdict
from tui.core.txn.incremental import PlannedTarget, create_targets, release_targets
from tui.core.txn.targets import Target
from tui.core.txn.tracker import RESUME_WAIT, Sent
from tui.core.txn.verdict import unreleased


class Sending:
    """Sends for one screen over ``fleet[connection]``; keeps the targets it created until they
    are released (a target's image is VALID only once it is flushed and closed)."""

    def __init__(self, fleet: Fleet | None, connection: str) -> None:
        self.fleet = fleet
        self.connection = connection
        # Targets created through QEMU: detached once their jobs ended.
        self.created: list[Target] = []

    @property
    def conn(self) -> Connection:
        """The open connection (NotConnectedError, one line, when the console has none)."""
        if self.fleet is None or self.connection not in self.fleet.connections:
            raise NotConnectedError(f"connection '{self.connection}' is not open")
        return self.fleet.connections[self.connection]

    async def create(self, todo: list[PlannedTarget], model: ConnectionModel) -> None:
        """Create ``todo`` through QEMU, then re-read the nodes (a BitmapTuiError when one
        cannot be created)."""
        conn = self.conn
        self.created += await create_targets(conn, todo, model)
        await conn.refresh_nodes()

    async def follow(self, run: TransactionRun) -> Verdict:
        """Send ``run`` (unless it was) and wait for its verdict; release what was created.
        A lost reply (outcome unknown) is shown as such while the link may come back; when it
        does and QEMU lists the jobs, they are followed to their verdict."""
        if not run.accepted:
            if (await run.send()).state is Sent.UNKNOWN:
                await run.resume(RESUME_WAIT)
            if not run.accepted:
                assert run.verdict is not None
                return run.verdict
        verdict = await run.wait()
        if verdict.accepted and self.created:
            failures = await release_targets(self.conn, self.created)
            self.created = []
            verdict = unreleased(verdict, failures)
        return verdict
