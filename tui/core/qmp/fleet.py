"""Many connections sharing one Store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tui.core.base.audit import AuditLog
from tui.core.base.errors import AddressError
from tui.core.model.store import Store
from tui.core.qmp.address import Address, parse_address_lenient
from tui.core.qmp.connection import Connection
from tui.core.qmp.probe import Opener
from tui.core.qmp.settings import ConnectionSettings
from tui.core.qmp.transport import make_opener, split_options


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A connection to open: a name and an address (plus per-connection options)."""

    name: str
    address: Address
    options: dict[str, Any] = field(default_factory=dict)


def endpoints_from(texts: Iterable[str]) -> list[Endpoint]:
    """``NAME=ADDR`` or ``ADDR`` strings → endpoints with unique names (``vm``, ``vm-2``, ...)."""
    out: list[Endpoint] = []
    seen: set[str] = set()
    for text in texts:
        name, sep, rest = text.partition("=")
        if sep and "/" not in name and ":" not in name and name:
            address = parse_address_lenient(rest)
        else:
            name, address = "", parse_address_lenient(text)
        base = name or address.default_name
        unique, i = base, 2
        while unique in seen:
            unique, i = f"{base}-{i}", i + 1
        seen.add(unique)
        out.append(Endpoint(unique, address))
    return out


class Fleet:
    """Owns the connections and the shared Store.

    Every connection gets ``settings`` (default: :class:`ConnectionSettings`'s defaults) with
    ``tuning`` (any of its fields by name, e.g. ``read_only=True, job_poll_interval=0.1``)."""

    def __init__(
        self,
        settings: ConnectionSettings | None = None,
        *,
        audit: AuditLog | None = None,
        opener: Opener | None = None,
        store: Store | None = None,
        **tuning: Any,
    ) -> None:
        self.store = store or Store()
        self.settings = (settings or ConnectionSettings()).but(**tuning)
        self.audit = audit
        self.opener = opener
        self.connections: dict[str, Connection] = {}

    @property
    def read_only(self) -> bool:
        return self.settings.read_only

    def add(self, endpoint: Endpoint) -> Connection:
        if endpoint.name in self.connections:
            raise AddressError(f"two connections are named '{endpoint.name}'")
        # tls_*, allow_insecure_tcp and ssh_* choose the transport; the rest tune the Connection.
        transport, rest = split_options(endpoint.options)
        opener = make_opener(transport) if self.opener is None or transport else self.opener
        conn = Connection(endpoint.name, endpoint.address, self.store, self.settings,
                          audit=self.audit, opener=opener, **rest)
        self.connections[endpoint.name] = conn
        return conn

    def __getitem__(self, name: str) -> Connection:
        return self.connections[name]

    def start(self) -> None:
        for conn in self.connections.values():
            conn.start()

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connections.values()), return_exceptions=True)

    async def wait_first_answer(self, timeout: float) -> None:
        """Wait until every connection has been tried once and, if it connected, read its state."""

        await asyncio.wait_for(
            asyncio.gather(*(c.attempted.wait() for c in self.connections.values())), timeout
        )
