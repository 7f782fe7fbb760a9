"""The service's one client of a QEMU: connect (reconnecting with backoff, as the console
does), hand on every event as QEMU's own bytes, and run the commands of the service's clients
with the service's own ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import ExecInterruptedError, Message, Runstate

from tui.core.base.errors import ConnectionLostError, NotConnectedError
from tui.core.qmp.address import Address
from tui.core.qmp.client import DISCONNECT_TIMEOUT, QuietQMPClient, disconnect, retrieve
from tui.core.qmp.probe import Opener, explain
from tui.core.qmp.settings import ConnectionSettings

log = logging.getLogger("bitmap-tui.serve")


async def _nothing() -> None:
    return None


class ForwardingClient(QuietQMPClient):
    """A QMP client that hands each event on at once, as the bytes QEMU sent (nothing parsed
    again, nothing serialized again: every client gets the same bytes)."""

    def __init__(self, name: str, on_event: Callable[[bytes], None]) -> None:
        super().__init__(name)
        self._on_event = on_event

    async def _event_dispatch(self, msg: Message) -> None:
        data = bytes(msg)
        self._on_event(data if data.endswith(b"\n") else data + b"\r\n")


class Upstream:
    """One QEMU, kept connected. ``on_down(reason)`` runs once the link is lost; ``on_event``
    gets each event's bytes."""

    def __init__(self, name: str, address: Address, opener: Opener, settings: ConnectionSettings,
                 *, on_down: Callable[[str], None],
                 on_event: Callable[[bytes], None]) -> None:
        self.name = name
        self.address = address
        self._opener = opener
        self._settings = settings
        self._on_down, self._on_event = on_down, on_event
        self._client: ForwardingClient | None = None
        self._cleanup: Callable[[], Awaitable[None]] = _nothing
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: QEMU's ``version`` object from its greeting (the service's greeting repeats it).
        self.version: dict[str, Any] = {}

    @property
    def up(self) -> bool:
        return self._client is not None and self._client.runstate == Runstate.RUNNING

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"serve-upstream:{self.name}")
        self._task.add_done_callback(retrieve)

    async def stop(self) -> None:
        # The link first: the serving loop sees it end and returns by itself (a cancel that
        # lands inside qemu.qmp's wait for a state change was seen to hang the stop).
        self._stopping = True
        if self._client is not None:
            await disconnect(self._client)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=DISCONNECT_TIMEOUT)
        self._client = None

    async def command(self, execute: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """QEMU's reply to one command (``return`` or ``error``, its id removed).

        qemu.qmp's ``_raw`` gives the reply as QEMU sent it, errors included (``execute``
        would turn an error into an exception and lose its exact form)."""
        client = self._client
        if client is None or client.runstate != Runstate.RUNNING:
            raise NotConnectedError(f"{self.name}: QEMU is not connected")
        msg: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        try:
            reply = await client._raw(msg, assign_id=True)
        except ExecInterruptedError:
            raise ConnectionLostError(f"{self.name}: QEMU went away before it answered") from None
        out = dict(reply)
        out.pop("id", None)
        return out

    async def _run(self) -> None:
        delay = self._settings.backoff_initial
        told: str | None = None
        while not self._stopping:
            reason = await self._connect()
            if reason is None:
                delay = self._settings.backoff_initial
                reason = await self._serve()
                told = None
            if self._stopping:
                return
            if reason != told:  # one line per change, not one per attempt
                log.info("%s: %s; connecting again with backoff", self.name, reason)
                told = reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.backoff_max)

    async def _connect(self) -> str | None:
        """Connect once; None when connected, else why not (one line)."""
        client = ForwardingClient(self.name, self._on_event)
        timeout = self._settings.connect_timeout
        try:
            target, ssl, self._cleanup = await asyncio.wait_for(self._opener(self.address), timeout)
            await asyncio.wait_for(client.connect(target, ssl=ssl), timeout)
        except BaseException as exc:
            await disconnect(client)
            if not isinstance(exc, Exception):  # cancelled: the service is stopping
                raise
            return f"cannot connect to {self.address}: {explain(self.address, exc)}"
        greeting = client.greeting
        qmp = greeting._asdict().get("QMP", {}) if greeting is not None else {}
        self.version = qmp.get("version", {}) if isinstance(qmp, dict) else {}
        self._client = client
        log.info("%s: connected to QEMU at %s", self.name, self.address)
        return None

    async def _serve(self) -> str:
        """Wait until the link is lost; tell the clients; return why."""
        client = self._client
        assert client is not None
        while client.runstate == Runstate.RUNNING:
            await client.runstate_changed()
        self._client = None
        self._on_down("QEMU went away")
        ended = await disconnect(client)
        with contextlib.suppress(Exception):
            await self._cleanup()
        return f"lost QEMU{f' ({ended})' if ended else ''}"
