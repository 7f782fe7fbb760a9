"""The one description of what the core needs of a :class:`tui.core.qmp.connection.Connection`.

Operations, the transaction tracker and the backup-chain code are written against this protocol,
so tests can hand them a small fake and the real Connection satisfies it as it is.
"""

from __future__ import annotations

from typing import Any, Protocol

from tui.core.model.state import ConnectionModel
from tui.core.model.store import Store


class Link(Protocol):
    """A named QMP connection sharing a Store."""

    name: str
    store: Store

    @property
    def read_only(self) -> bool: ...

    @property
    def model(self) -> ConnectionModel: ...

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any: ...

    def note_job_node(self, job_id: str, node: str) -> None: ...

    async def refresh_nodes(self) -> None: ...
