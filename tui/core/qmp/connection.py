"""One QMP connection: connect with a timeout, probe, serve the event pump and the polls,
reconnect; and the commands sent over it.

A :class:`Connection` owns a ``qemu.qmp`` client per attempt and pushes everything it learns into
the shared :class:`~tui.core.model.store.Store`; it never holds UI state. Connecting and probing
are :mod:`tui.core.qmp.probe`'s, the polls :mod:`tui.core.qmp.polling`'s, the client
:mod:`tui.core.qmp.client`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient, Runstate

from tui.core.base.audit import AuditLog
from tui.core.base.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotConnectedError,
    QMPCommandError,
    ReadOnlyError,
)
from tui.core.model import reducer
from tui.core.model.state import LinkState
from tui.core.model.store import Store
from tui.core.qmp.address import Address
from tui.core.qmp.client import QuietQMPClient, disconnect, finish, retrieve
from tui.core.qmp.commands import guard_command, is_mutating
from tui.core.qmp.polling import Polling
from tui.core.qmp.probe import Opener, describe_error, explain, handshake
from tui.core.qmp.served import VIEWER, role_in
from tui.core.qmp.settings import ConnectionSettings
from tui.core.qmp.transport import make_opener

log = logging.getLogger(__name__)
# qemu.qmp logs every failure it raises; we turn those into the connection's one-line state, so its
# records must not reach stderr through logging's last-resort handler (they would draw over the
# console and duplicate the message). An application may still attach its own handler.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())


async def _nothing() -> None:
    return None


class Connection(Polling):
    """One named QEMU, kept connected (when ``reconnect``) and mirrored into a Store.

    ``settings`` (default: :class:`ConnectionSettings`'s defaults) with ``tuning`` (any of its
    fields by name, e.g. ``connect_timeout=20``) say how it connects and polls."""

    def __init__(
        self,
        name: str,
        address: Address,
        store: Store,
        settings: ConnectionSettings | None = None,
        *,
        audit: AuditLog | None = None,
        opener: Opener | None = None,
        client_factory: Callable[[str], QuietQMPClient] | None = None,
        **tuning: Any,
    ) -> None:
        self.name = name
        self.address = address
        self.store = store
        self.settings = (settings or ConnectionSettings()).but(**tuning)
        self.audit = audit
        self._init_polling()
        # The default refuses plaintext TCP to non-loopback hosts and opens ssh:// tunnels.
        self._opener = opener or make_opener()
        # TLS-nudging (QEMU 7.2's TLS monitor, docs/qmp-facts.md) and quiet (no eager debug formatting).
        self._client_factory = client_factory or QuietQMPClient
        self._client: QuietQMPClient | None = None
        self._cleanup: Callable[[], Awaitable[None]] = _nothing
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        # Set after each attempt (success or failure) so callers can wait for a first answer.
        self.attempted = asyncio.Event()
        self.next_retry: float | None = None
        self.attempts = 0
        store.add_connection(name, str(address))

    # ---------------------------------------------------------------- lifecycle

    @property
    def read_only(self) -> bool:
        """Read-only by the session's decision, or because the service gave this client only
        a viewer's rights."""
        return self.settings.read_only or self.model.service_role == VIEWER

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.runstate == Runstate.RUNNING

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"qmp:{self.name}")
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        client = self._client
        if client is not None:
            await disconnect(client)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None
        # e.g. the disconnect of a link dropped after a timeout
        await finish(*self._background)

    def _set_link(self, state: LinkState, error: str | None) -> None:
        self.store.update(self.name, lambda c: reducer.link_changed(c, state, error))

    async def _run(self) -> None:
        delay = self.settings.backoff_initial
        first = True
        while not self._stopping:
            ok = await self._attempt(first)
            first = False
            self.attempted.set()
            if ok:
                delay = self.settings.backoff_initial
                await self._serve()
            if not self.settings.reconnect or self._stopping:
                break
            self.next_retry = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.next_retry = None
            delay = min(delay * 2, self.settings.backoff_max)

    async def _attempt(self, first: bool) -> bool:
        self.attempts += 1
        if first:
            self._set_link(LinkState.CONNECTING, None)
        client = self._client_factory(self.name)
        cleanup: Callable[[], Awaitable[None]] | None = None
        timeout = self.settings.connect_timeout
        try:
            target, ssl, cleanup = await asyncio.wait_for(self._opener(self.address), timeout)
            version, commands = await handshake(client, target, ssl, self.address, timeout)
            self._client = client
            # Version and commands first (the job poll needs them); "connected" is only shown
            # once the first full refresh worked, so a peer that fails it never flickers green.
            role = role_in(client.greeting_qmp())
            self.store.update(self.name, lambda c: replace(c, version=version, commands=commands,
                                                           service_role=role))
            await self.refresh()
        except BaseException as exc:  # every cause becomes one line in the connection's state
            self._client = None
            ended = await disconnect(client)
            if cleanup is not None:  # e.g. the ssh tunnel of this attempt
                with contextlib.suppress(Exception):
                    await cleanup()
            if not isinstance(exc, Exception):  # cancelled (stop()): cleaned up, nothing to show
                raise
            # A reply cut short by the session ending: the session's own error is the cause.
            cause = ended if ended is not None and isinstance(exc, ConnectionLostError) else exc
            was = self.model.state
            state = LinkState.DISCONNECTED if was is LinkState.DISCONNECTED else LinkState.FAILED
            self._set_link(state, explain(self.address, cause))
            return False
        self._cleanup = cleanup or _nothing
        self.store.update(self.name, lambda c: reducer.connected(c, version, commands))
        return True

    async def _serve(self) -> None:
        client = self._client
        assert client is not None
        pump = asyncio.create_task(self._pump(client), name=f"qmp-pump:{self.name}")
        poller = asyncio.create_task(self._poll_loop(), name=f"qmp-poll:{self.name}")
        for task in (pump, poller):
            task.add_done_callback(retrieve)
        cause: BaseException | None = None
        try:
            # The pump is watched too: if it died, events would pile up unread in qemu.qmp's queue.
            while client.runstate == Runstate.RUNNING and not poller.done() and not pump.done():
                waiter = asyncio.create_task(client.runstate_changed())
                await asyncio.wait({waiter, poller, pump}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            for task in (poller, pump):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    cause = cause or task.exception()
        finally:
            await finish(pump, poller)
            ended = await disconnect(client)
            # A query cut short by the session ending says less than the session's own error.
            if ended is not None and (cause is None or isinstance(cause, ConnectionLostError)):
                cause = ended
            with contextlib.suppress(Exception):
                await self._cleanup()
            self._client = None
        if not self._stopping:
            error = describe_error(cause) if cause is not None else "QEMU went away"
            self._set_link(LinkState.DISCONNECTED, f"connection lost: {error}")

    # ---------------------------------------------------------------- commands

    async def _query(self, command: str) -> Any:
        return await self.execute(command)

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one QMP command; return its data or raise a typed error.

        Mutating commands are refused in read-only mode, checked by :func:`guard_command`,
        written to the audit log, and followed by a refresh so the store shows their effect when
        this returns.
        """
        mutating = is_mutating(command)
        if mutating and self.read_only:
            why = "read-only mode" if self.settings.read_only else "viewer at the service"
            raise ReadOnlyError(f"{why}: '{command}' was not sent to {self.name}")
        guard_command(command, arguments)
        client = self._client
        if client is None or client.runstate != Runstate.RUNNING:
            raise NotConnectedError(f"{self.name} is not connected")
        # Write-ahead: the intent is on disk before the command leaves (AuditError: not sent).
        audit = self.audit if mutating else None
        entry = audit.intent(self.name, command, arguments) if audit is not None else ""
        try:
            reply = await asyncio.wait_for(
                client.execute(command, arguments), timeout or self.settings.command_timeout
            )
        except ExecuteError as exc:
            if audit is not None:
                audit.outcome(entry, error=f"{exc.error_class}: {exc}")
            raise QMPCommandError(command, exc.error_class, str(exc)) from None
        except ExecInterruptedError:
            if audit is not None:
                audit.outcome(entry, error="connection lost")
            raise ConnectionLostError(
                f"{self.name}: connection lost before QEMU answered '{command}'"
            ) from None
        except TimeoutError:
            if audit is not None:
                audit.outcome(entry, error="timeout")
            # A QMP monitor answers in order: one stuck reply means the link is unusable.
            self._drop_later(client)
            raise CommandTimeoutError(
                f"{self.name}: QEMU did not answer '{command}' within "
                f"{timeout or self.settings.command_timeout:g} s"
            ) from None
        except BaseException as exc:  # cancelled, or the client failed otherwise: effect unknown
            if audit is not None:
                audit.outcome(entry, error=f"not answered: {type(exc).__name__}")
            raise
        if mutating:
            if audit is not None:
                audit.outcome(entry, reply=reply)
            if not command.startswith("human-monitor"):
                with contextlib.suppress(Exception):
                    await self.refresh()
        return reply

    def _drop_later(self, client: QMPClient) -> None:
        # Kept referenced until done: the loop holds only a weak reference to tasks.
        task = asyncio.get_running_loop().create_task(self._drop(client))
        task.add_done_callback(retrieve)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drop(self, client: QMPClient) -> None:
        await disconnect(client)

    def note_job_node(self, job_id: str, node: str) -> None:
        self.store.update(self.name, lambda c: reducer.set_job_node(c, job_id, node))
