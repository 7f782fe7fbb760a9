"""One QMP connection: connect with a timeout, probe, one event pump, polling, reconnect.

A :class:`Connection` owns a ``qemu.qmp`` client per attempt and pushes everything it learns into
the shared :class:`~tui.core.model.store.Store`; it never holds UI state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import ssl as ssl_mod
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

from qemu.qmp import ExecInterruptedError, ExecuteError, Message, QMPClient, Runstate
from qemu.qmp.error import ProtocolError
from qemu.qmp.message import DeserializationError, UnexpectedTypeError
from qemu.qmp.protocol import ConnectError as QMPConnectError
from qemu.qmp.qmp_client import GreetingError, NegotiationError, ServerParseError

from tui.core.base.audit import AuditLog
from tui.core.base.errors import (
    AddressError,
    BusySocketError,
    CommandTimeoutError,
    ConnectionLostError,
    NotConnectedError,
    QMPCommandError,
    ReadOnlyError,
    ValidationError,
)
from tui.core.model import reducer
from tui.core.model.parse import parse_jobs, parse_nodes, parse_version
from tui.core.model.state import LinkState
from tui.core.model.store import Store
from tui.core.qmp.address import Address
from tui.core.qmp.transport import TLSNudgingQMPClient, make_opener

log = logging.getLogger(__name__)
# qemu.qmp logs every failure it raises; we turn those into the connection's one-line state, so its
# records must not reach stderr through logging's last-resort handler (they would draw over the
# console and duplicate the message). An application may still attach its own handler.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())

# Commands that only read state: everything else mutates (allow-list, so a new QEMU command is
# refused in read-only mode until someone decides it is safe).
READ_ONLY_COMMANDS = frozenset(
    {"qmp_capabilities", "x-debug-block-dirty-bitmap-sha256", "query-block-jobs", "query-jobs"}
)

# Pause after a job event before re-reading bitmaps, so a burst of events costs one query.
EVENT_DEBOUNCE = 0.05
# A connection not on screen is polled this many times less often; after UNCHANGED_ROUNDS
# refreshes that changed nothing, twice less again, never slower than SLOWEST_POLL seconds.
# Events (and coming into view) still refresh it at once.
OFF_SCREEN_FACTOR = 4
UNCHANGED_ROUNDS = 3
SLOWEST_POLL = 30.0

# Opens the transport: returns what QMPClient.connect() takes, an SSL context or None, and a
# cleanup coroutine (e.g. closing an SSH tunnel). Remote transports plug in here.
Opener = Callable[[Address], Awaitable[tuple[Any, ssl_mod.SSLContext | None, Callable[[], Awaitable[None]]]]]


class EventInbox:
    """Where the app's client leaves each event as it arrives, for its one consumer to take whole.

    qemu.qmp hands events to listeners through an ``asyncio.Queue`` each (a put and a get per
    event) and keeps every event it ever delivered in the listener's ``history``, which never
    shrinks. The inbox is a plain list: an event costs an append, the consumer takes everything
    queued at once (an event flood is reduced in batches), and nothing is remembered after that.
    The Store keeps its own bounded log.
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def put(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._arrived.set()

    async def take(self) -> list[dict[str, Any]]:
        """Wait until at least one event is queued; return every queued event, oldest first."""
        while not self._events:
            self._arrived.clear()
            await self._arrived.wait()
        batch, self._events = self._events, []
        return batch

    def __len__(self) -> int:
        return len(self._events)


def plain_event(msg: Message) -> dict[str, Any]:
    """The event as a plain dict. A Message keeps its parsed JSON object in ``_obj`` (private to
    qemu.qmp, pinned below 0.1 in pyproject); reading it through the Mapping interface instead
    costs several times more per event."""
    obj = getattr(msg, "_obj", None)
    return obj if type(obj) is dict else dict(msg)


class QuietQMPClient(TLSNudgingQMPClient):
    """The app's client: formats messages for its debug log only when debug logging is on, and
    delivers events to :attr:`inbox` (as plain dicts) instead of qemu.qmp's event listeners.

    qemu.qmp's message hooks call ``str(msg)`` (an indented ``json.dumps``) for every message in
    and out before ``logger.debug`` decides to drop it; on an event flood that is about half of
    the client's per-message cost (benchmarks/: event_pipeline). Its listeners add a queue hop
    and an unbounded history per event (see EventInbox). ``_event_dispatch`` is private to qemu.qmp.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox = EventInbox()

    async def _event_dispatch(self, msg: Message) -> None:
        self.inbox.put(plain_event(msg))

    def _cb_inbound(self, msg: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_inbound(msg)
        return msg

    def _cb_outbound(self, msg: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_outbound(msg)
        return msg

    async def _establish_session(self) -> None:
        # The transport is open: from here on, a silence is a missing greeting (see busy_error).
        self.transport_open = True
        await super()._establish_session()


# What connect() on a unix socket whose listen queue is full reports: EAGAIN, or EINVAL as
# qemu.qmp's asyncio path turns it.
_QUEUE_FULL = frozenset({errno.EAGAIN, errno.EINVAL})


def busy_error(client: QMPClient, exc: BaseException, where: str,
               timeout: float) -> BusySocketError | None:
    """The error to report when ``exc`` (from connecting ``client``) means another client holds
    the socket, else None.

    QEMU serves one QMP client per monitor and leaves later ones in the listen queue: the
    connect is accepted but no greeting comes; once the queue is full connect() fails at once."""
    inner = exc.exc if isinstance(exc, QMPConnectError) else exc
    if isinstance(inner, OSError) and inner.errno in _QUEUE_FULL:
        return BusySocketError(f"busy: another client holds {where} (its queue is full)")
    if isinstance(exc, TimeoutError) and getattr(client, "transport_open", False):
        return BusySocketError(f"timed out: connected to {where} but no QMP greeting within "
                               f"{timeout:g} s; busy: another client probably holds it "
                               "(QEMU serves one at a time)")
    return None


def is_mutating(command: str) -> bool:
    return not (command.startswith("query-") or command in READ_ONLY_COMMANDS)


def _merge_sources(args: dict[str, Any] | None) -> bool:
    sources = (args or {}).get("bitmaps")
    return isinstance(sources, list) and len(sources) > 0


def guard_command(command: str, args: dict[str, Any] | None) -> None:
    """Refuse commands that are known to harm QEMU, whatever layer asked for them.

    QEMU 7.2 segfaults on ``block-dirty-bitmap-merge`` with an empty source list (docs/qmp-facts.md),
    also inside a transaction.
    """
    if command == "block-dirty-bitmap-merge" and not _merge_sources(args):
        raise ValidationError("refused: block-dirty-bitmap-merge needs at least one source bitmap")
    if command == "transaction" and args:
        for action in args.get("actions") or []:
            if isinstance(action, dict) and action.get("type") == "block-dirty-bitmap-merge":
                if not _merge_sources(action.get("data")):
                    raise ValidationError(
                        "refused: a block-dirty-bitmap-merge action has no source bitmap"
                    )


def _not_qmp(inner: BaseException | None) -> str:
    if isinstance(inner, EOFError):
        return "not a QMP server (it closed the connection without a QMP greeting)"
    if isinstance(inner, (TimeoutError, asyncio.TimeoutError)):
        return "timed out: no QMP greeting"
    return "not a QMP server (it sent something that is not a QMP greeting)"


def describe_error(exc: BaseException) -> str:
    """One line for the operator from any connect-time exception."""
    if isinstance(exc, QMPConnectError):
        inner = exc.exc
        if isinstance(inner, (GreetingError, NegotiationError)):
            return _not_qmp(inner.exc)
        if isinstance(inner, (ProtocolError, UnicodeDecodeError)):
            return "not a QMP server (it sent bytes that are not QMP JSON)"
        return describe_error(inner)
    if isinstance(exc, (GreetingError, NegotiationError)):
        return _not_qmp(exc.exc)
    # Mid-session protocol errors (the session is dropped and made again).
    if isinstance(exc, (DeserializationError, UnicodeDecodeError)):
        return "the server sent something that is not JSON"
    if isinstance(exc, UnexpectedTypeError):
        return "the server sent JSON that is not a QMP message"
    if isinstance(exc, ServerParseError):
        return "QEMU could not parse what was sent (protocol out of step)"
    if isinstance(exc, FileNotFoundError):
        return f"no such socket: {exc.filename}" if exc.filename else "no such socket"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing is listening there)"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}" if exc.filename else "permission denied"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out: the server did not answer"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, AddressError | BusySocketError):
        return str(exc)
    if isinstance(exc, ssl_mod.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, asyncio.LimitOverrunError | ValueError) and "limit" in str(exc).lower():
        return "the server sent a message larger than 10 MB"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


async def _nothing() -> None:
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Done-callback: take a finished task's exception, so a task that failed while its owner
    was already stopping never prints "Task exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


async def _finish(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until they have ended (their errors are dropped: the caller
    has already taken the one that matters)."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)


# A disconnect that cannot finish (a peer that stopped reading, a stuck TLS flush) must not hang
# the app's quit or the reconnect loop.
DISCONNECT_TIMEOUT = 5.0


async def _disconnect(client: QMPClient) -> BaseException | None:
    """Disconnect within DISCONNECT_TIMEOUT; return the error the session ended with, if any."""
    try:
        await asyncio.wait_for(client.disconnect(), DISCONNECT_TIMEOUT)
    except Exception as exc:
        return exc
    return None


class Connection:
    """One named QEMU, kept connected (when ``reconnect``) and mirrored into a Store."""

    def __init__(
        self,
        name: str,
        address: Address,
        store: Store,
        *,
        read_only: bool = False,
        connect_timeout: float = 3.0,
        command_timeout: float = 10.0,
        refresh_interval: float = 2.0,
        job_poll_interval: float = 0.5,
        reconnect: bool = True,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        audit: AuditLog | None = None,
        opener: Opener | None = None,
        client_factory: Callable[[str], QuietQMPClient] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.store = store
        self.read_only = read_only
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.refresh_interval = refresh_interval
        self.job_poll_interval = job_poll_interval
        # Whether a screen shows this connection (headless users leave it on: full rate).
        self.on_screen = True
        self._unchanged_rounds = 0
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.audit = audit
        # The default refuses plaintext TCP to non-loopback hosts and opens ssh:// tunnels.
        self._opener = opener or make_opener()
        # TLS-nudging (QEMU 7.2's TLS monitor, docs/qmp-facts.md) and quiet (no eager debug formatting).
        self._client_factory = client_factory or QuietQMPClient
        self._client: QuietQMPClient | None = None
        self._cleanup: Callable[[], Awaitable[None]] = _nothing
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._want_nodes = False
        # > 0 while node queries must not be sent (see quiet_nodes).
        self._quiet_nodes = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        # Job events counted, and the count at each job's last event (see refresh_jobs).
        self._event_serial = 0
        self._job_event_at: dict[str, int] = {}
        # Set after each attempt (success or failure) so callers can wait for a first answer.
        self.attempted = asyncio.Event()
        self.next_retry: float | None = None
        self.attempts = 0
        store.add_connection(name, str(address))

    # ---------------------------------------------------------------- lifecycle

    @property
    def model(self) -> Any:
        return self.store.connection(self.name)

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
            await _disconnect(client)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None
        # e.g. the disconnect of a link dropped after a timeout
        await _finish(*self._background)

    def _set_link(self, state: LinkState, error: str | None) -> None:
        self.store.update(self.name, lambda c: reducer.link_changed(c, state, error))

    async def _run(self) -> None:
        delay = self.backoff_initial
        first = True
        while not self._stopping:
            ok = await self._attempt(first)
            first = False
            self.attempted.set()
            if ok:
                delay = self.backoff_initial
                await self._serve()
            if not self.reconnect or self._stopping:
                break
            self.next_retry = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.next_retry = None
            delay = min(delay * 2, self.backoff_max)

    async def _attempt(self, first: bool) -> bool:
        self.attempts += 1
        if first:
            self._set_link(LinkState.CONNECTING, None)
        client = self._client_factory(self.name)
        cleanup: Callable[[], Awaitable[None]] | None = None
        try:
            target, ssl, cleanup = await asyncio.wait_for(
                self._opener(self.address), self.connect_timeout
            )
            try:
                await asyncio.wait_for(client.connect(target, ssl=ssl), self.connect_timeout)
            except Exception as exc:
                where = self.address.path if self.address.kind == "unix" else str(self.address)
                busy = busy_error(client, exc, where, self.connect_timeout)
                if busy is None:
                    raise
                raise busy from None
            version = parse_version(
                await asyncio.wait_for(client.execute("query-version"), self.connect_timeout)
            )
            raw_cmds = await asyncio.wait_for(client.execute("query-commands"), self.connect_timeout)
            commands = frozenset(
                c["name"] for c in (raw_cmds if isinstance(raw_cmds, list) else []) if isinstance(c, dict) and "name" in c
            )
            self._client = client
            # Version and commands first (the job poll needs them); "connected" is only shown
            # once the first full refresh worked, so a peer that fails it never flickers green.
            self.store.update(self.name, lambda c: replace(c, version=version, commands=commands))
            await self.refresh()
        except BaseException as exc:  # every cause becomes one line in the connection's state
            self._client = None
            ended = await _disconnect(client)
            if cleanup is not None:  # e.g. the ssh tunnel of this attempt
                with contextlib.suppress(Exception):
                    await cleanup()
            if not isinstance(exc, Exception):  # cancelled (stop()): cleaned up, nothing to show
                raise
            # A reply cut short by the session ending: the session's own error is the cause.
            cause = ended if ended is not None and isinstance(exc, ConnectionLostError) else exc
            was = self.model.state
            state = LinkState.DISCONNECTED if was is LinkState.DISCONNECTED else LinkState.FAILED
            self._set_link(state, self._explain(cause))
            return False
        self._cleanup = cleanup or _nothing
        self.store.update(self.name, lambda c: reducer.connected(c, version, commands))
        return True

    def _explain(self, exc: BaseException) -> str:
        text = describe_error(exc)
        if self.address.kind == "unix":
            path = self.address.path
            if text == "no such socket":
                return f"no such socket: {path}"
            if text.startswith("connection refused") and os.path.exists(path):
                import stat

                if not stat.S_ISSOCK(os.stat(path).st_mode):
                    return f"not a socket: {path}"
                return f"connection refused: no QEMU is listening on {path}"
        return text

    async def _serve(self) -> None:
        client = self._client
        assert client is not None
        pump = asyncio.create_task(self._pump(client), name=f"qmp-pump:{self.name}")
        poller = asyncio.create_task(self._poll_loop(), name=f"qmp-poll:{self.name}")
        for task in (pump, poller):
            task.add_done_callback(_retrieve)
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
            await _finish(pump, poller)
            ended = await _disconnect(client)
            # A query cut short by the session ending says less than the session's own error.
            if ended is not None and (cause is None or isinstance(cause, ConnectionLostError)):
                cause = ended
            with contextlib.suppress(Exception):
                await self._cleanup()
            self._client = None
        if not self._stopping:
            error = describe_error(cause) if cause is not None else "QEMU went away"
            self._set_link(LinkState.DISCONNECTED, f"connection lost: {error}")

    async def _pump(self, client: QuietQMPClient) -> None:
        """The only consumer of the client's events: whatever is queued when one arrives is taken
        with it and reduced as one batch."""
        store = self.store
        name = self.name
        inbox = client.inbox
        while True:
            batch = await inbox.take()
            store.apply_events(name, batch)
            self._note_job_events(batch)

    def _note_job_events(self, events: list[dict[str, Any]]) -> None:
        """Job events mark their jobs (a poll answered before them must not undo them) and ask
        for a node refresh (their bitmaps changed)."""
        job_events = reducer.JOB_EVENTS
        seen = False
        for event in events:
            if event.get("event") not in job_events:
                continue
            seen = True
            self._event_serial += 1
            data = event.get("data")
            if isinstance(data, dict):
                for key in ("id", "device"):
                    if isinstance(data.get(key), str):
                        self._job_event_at[data[key]] = self._event_serial
        if seen:
            self._want_nodes = True
            self._wake.set()

    # ---------------------------------------------------------------- polling

    def request_refresh(self) -> None:
        """Ask for a node and job refresh soon (coalesced)."""
        self._want_nodes = True
        self._wake.set()

    def set_on_screen(self, shown: bool) -> None:
        """A screen started or stopped showing this connection: off screen it is polled less
        often; coming into view it is refreshed at once."""
        if shown == self.on_screen:
            return
        self.on_screen = shown
        self._unchanged_rounds = 0
        if shown:
            self.request_refresh()
        self._note_poll_interval()

    def node_interval(self) -> float:
        """Seconds between node refreshes now (see OFF_SCREEN_FACTOR)."""
        if self.on_screen:
            return self.refresh_interval
        slow = self.refresh_interval * OFF_SCREEN_FACTOR
        if self._unchanged_rounds >= UNCHANGED_ROUNDS:
            slow *= 2
        return max(self.refresh_interval, min(slow, SLOWEST_POLL))

    def _note_poll_interval(self) -> None:
        every = self.node_interval()
        slow = None if every <= self.refresh_interval else every
        if self.model.slow_poll != slow:
            self.store.update(self.name, lambda c: replace(c, slow_poll=slow))

    async def _poll_loop(self) -> None:
        # A fleet connects all at once: polled in step, its replies would arrive in one burst
        # (200 node lists parsed back to back stall the console). The first wait is a random
        # part of the interval (the connect has just refreshed), so the polls spread out.
        last_nodes = time.monotonic() - random.uniform(0, self.node_interval())
        while True:
            busy = bool(self.model.active_jobs)
            wait = self.job_poll_interval if busy else max(
                0.0, self.node_interval() - (time.monotonic() - last_nodes)
            )
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
                await asyncio.sleep(EVENT_DEBOUNCE)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self._want_nodes or time.monotonic() - last_nodes >= self.node_interval():
                    self._want_nodes = False
                    await self.refresh_nodes()
                    last_nodes = time.monotonic()
                if busy or self.model.active_jobs:
                    await self.refresh_jobs()
            except (NotConnectedError, ConnectionLostError):
                if self._stopping:  # the link is being closed under the query: not a failure
                    return
                raise

    @contextlib.contextmanager
    def quiet_nodes(self) -> Iterator[None]:
        """Hold node queries back (they run once afterwards).

        QEMU 7.2 aborts (``qcow2_get_specific_info: Assertion `false' failed``) when
        query-named-block-nodes or query-block runs while ``blockdev-create`` formats a qcow2 image.
        """
        self._quiet_nodes += 1
        try:
            yield
        finally:
            self._quiet_nodes -= 1
            if not self._quiet_nodes:
                self.request_refresh()

    async def refresh_nodes(self) -> None:
        if self._quiet_nodes:
            self._want_nodes = True
            return
        cmds = self.model.commands
        # query-named-block-nodes is 2.0+; before that query-block is all there is.
        named = await self._query("query-named-block-nodes") if (
            not cmds or "query-named-block-nodes" in cmds
        ) else None
        blocks = await self._query("query-block")
        nodes = parse_nodes(named, blocks)
        before = self.model
        self.store.update(self.name, lambda c: reducer.apply_nodes(c, nodes))
        self._unchanged_rounds = self._unchanged_rounds + 1 if self.model is before else 0
        self._note_poll_interval()

    async def refresh_jobs(self) -> None:
        cmds = self.model.commands
        started = self._event_serial
        qjobs = await self._query("query-jobs") if "query-jobs" in cmds else None
        qblock = await self._query("query-block-jobs")
        jobs = parse_jobs(qjobs, qblock)
        # A job event that arrived between the queries and now is newer than their replies.
        keep = frozenset(j for j, at in self._job_event_at.items() if at > started)
        self.store.update(self.name, lambda c: reducer.apply_jobs(c, jobs, keep))

    async def refresh(self) -> None:
        await self.refresh_nodes()
        await self.refresh_jobs()

    async def _query(self, command: str) -> Any:
        return await self.execute(command)

    # ---------------------------------------------------------------- commands

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
            raise ReadOnlyError(f"read-only mode: '{command}' was not sent to {self.name}")
        guard_command(command, arguments)
        client = self._client
        if client is None or client.runstate != Runstate.RUNNING:
            raise NotConnectedError(f"{self.name} is not connected")
        # Write-ahead: the intent is on disk before the command leaves (AuditError: not sent).
        audit = self.audit if mutating else None
        entry = audit.intent(self.name, command, arguments) if audit is not None else ""
        try:
            reply = await asyncio.wait_for(
                client.execute(command, arguments), timeout or self.command_timeout
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
            # Kept referenced until done: the loop holds only a weak reference to tasks.
            task = asyncio.get_running_loop().create_task(self._drop(client))
            task.add_done_callback(_retrieve)
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise CommandTimeoutError(
                f"{self.name}: QEMU did not answer '{command}' within "
                f"{timeout or self.command_timeout:g} s"
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

    async def _drop(self, client: QMPClient) -> None:
        await _disconnect(client)

    def note_job_node(self, job_id: str, node: str) -> None:
        self.store.update(self.name, lambda c: reducer.set_job_node(c, job_id, node))
