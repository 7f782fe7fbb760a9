"""How a connection behaves: timeouts, polling, reconnecting, read-only.

:class:`ConnectionSettings` is the one place each of these defaults is written: the config's
``defaults`` section, :class:`~tui.core.qmp.fleet.Fleet` and
:class:`~tui.core.qmp.connection.Connection` all start from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    #: refuse every mutating command (checked in the core, before anything is sent)
    read_only: bool = False
    #: seconds for opening the transport, the QMP greeting and each probe query
    connect_timeout: float = 5.0
    #: seconds QEMU has to answer one command before the link is dropped
    command_timeout: float = 10.0
    #: seconds between node refreshes of a connection on screen
    refresh_interval: float = 2.0
    #: seconds between job polls while a job runs
    job_poll_interval: float = 0.5
    #: connect again after a failure or a lost link
    reconnect: bool = True
    #: the first pause before connecting again, doubled after each failure up to backoff_max
    backoff_initial: float = 0.25
    backoff_max: float = 10.0

    def but(self, **changes: Any) -> ConnectionSettings:
        """These settings with ``changes`` (field names; an unknown one is a TypeError)."""
        return replace(self, **changes) if changes else self


DEFAULT_SETTINGS = ConnectionSettings()
