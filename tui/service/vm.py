"""One VM served: its socket ``NAME.qmp`` in the service's directory, its clients, and the
one upstream connection to its QEMU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from tui.core.base.audit import AuditLog
from tui.core.base.text import shown
from tui.core.config import ServiceConfig
from tui.core.qmp.fleet import Endpoint
from tui.core.qmp.settings import ConnectionSettings
from tui.core.qmp.transport import make_opener, split_options
from tui.service.clients import ClientSession, refuse
from tui.service.rights import peer_of, role_of
from tui.service.upstream import Upstream

log = logging.getLogger("bitmap-tui.serve")

#: More clients than this on one VM are turned away (a flood of connects costs only itself).
MAX_CLIENTS = 256
SOCKET_MODE = 0o666  # who may do what is decided by peer credentials, not by the file's mode

class ServedVm:
    """A VM's service socket and its clients. While QEMU is away the socket accepts and closes
    at once; the clients of a lost QEMU are disconnected (they reconnect as they do to QEMU)."""

    def __init__(self, endpoint: Endpoint, rights: ServiceConfig,
                 audit: AuditLog, settings: ConnectionSettings) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.path = rights.socket_for(endpoint.name)
        self.rights = rights
        self.audit = audit
        self.clients: set[ClientSession] = set()
        transport, _rest = split_options(endpoint.options)
        self.upstream = Upstream(endpoint.name, endpoint.address, make_opener(transport), settings,
                                 on_down=self._down, on_event=self._event)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        os.chmod(self.path, SOCKET_MODE)
        self.upstream.start()
        log.info("%s: serving %s for QEMU at %s", self.name, self.path, self.endpoint.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._down("the service stopped serving this VM")
        await self.upstream.stop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _down(self, reason: str) -> None:
        for client in list(self.clients):
            client.close(reason)
        self.clients.clear()

    def _event(self, data: bytes) -> None:
        for client in list(self.clients):
            if client.negotiated:
                client.send(data)
            if client.closed:
                self.clients.discard(client)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.upstream.up:
            writer.transport.abort()  # QEMU is away: refused until it is back
            return
        if len(self.clients) >= MAX_CLIENTS:
            log.info("%s: a client was turned away: %d clients already", self.name, MAX_CLIENTS)
            writer.transport.abort()
            return
        peer = peer_of(writer.get_extra_info("socket"))
        role = role_of(peer, self.rights.operators, self.rights.viewers)
        if role is None:
            log.info("%s: refused %s (uid %d, pid %d): not an operator or viewer", self.name,
                     peer.user, peer.uid, peer.pid)
            await refuse(writer, f"bitmap-tui service: user {shown(peer.user)} may not use "
                         f"{self.name} (not in service.operators or service.viewers)")
            return
        client = ClientSession(self.name, reader, writer, peer, role, self.upstream, self.audit)
        self.clients.add(client)
        log.info("%s: %s connected as %s", self.name, client.who, role)
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            client.close("done")
