"""The app's QMP client: events into an inbox, no eager debug formatting; and the few task and
disconnect helpers every owner of a client needs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from qemu.qmp import Message, QMPClient
from qemu.qmp.error import ProtocolError
from qemu.qmp.models import Greeting
from qemu.qmp.qmp_client import GreetingError

from tui.core.base.errors import ServiceRefusedError
from tui.core.qmp.served import refusal_in
from tui.core.qmp.transport import TLSNudgingQMPClient


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

    async def _get_greeting(self) -> Greeting:
        # qemu.qmp's own, except that a QMP error in its place (bitmap-tui's service refusing
        # this user) is that error's one line instead of "not a QMP greeting".
        try:
            msg = await self._recv()
        except ProtocolError as err:
            raise GreetingError("Did not understand Greeting", err) from err
        refusal = refusal_in(plain_event(msg))
        if refusal is not None:
            raise ServiceRefusedError(refusal)
        try:
            return Greeting(msg)
        except (KeyError, TypeError) as err:
            raise GreetingError("Did not understand Greeting", err) from err

    def greeting_qmp(self) -> dict[str, Any]:
        """The greeting's ``QMP`` object (empty before a greeting)."""
        greeting = self.greeting
        qmp = greeting._asdict().get("QMP") if greeting is not None else None
        return qmp if isinstance(qmp, dict) else {}

    async def _establish_session(self) -> None:
        # The transport is open: from here on, a silence is a missing greeting (see busy_error).
        self.transport_open = True
        await super()._establish_session()


def retrieve(task: asyncio.Task[Any]) -> None:
    """Done-callback: take a finished task's exception, so a task that failed while its owner
    was already stopping never prints "Task exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


async def finish(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until they have ended (their errors are dropped: the caller
    has already taken the one that matters)."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)


# A disconnect that cannot finish (a peer that stopped reading, a stuck TLS flush) must not hang
# the app's quit or the reconnect loop.
DISCONNECT_TIMEOUT = 5.0


async def disconnect(client: QMPClient) -> BaseException | None:
    """Disconnect within DISCONNECT_TIMEOUT; return the error the session ended with, if any."""
    try:
        await asyncio.wait_for(client.disconnect(), DISCONNECT_TIMEOUT)
    except Exception as exc:
        return exc
    return None
