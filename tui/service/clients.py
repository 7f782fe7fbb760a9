"""One client of a VM's service socket: the greeting, the capabilities negotiation, then its
commands in order (checked against its role, audited when they change something, forwarded
with its ids kept) and every QEMU event, through a bounded outgoing buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from tui.core.base.audit import AuditLog
from tui.core.base.errors import AuditError, ConnectError, OutcomeUnknownError, ValidationError
from tui.core.base.text import shown
from tui.core.qmp.commands import guard_command, is_mutating
from tui.core.qmp.served import GREETING_KEY
from tui.service.rights import Peer, Role
from tui.service.wire import BadInput, JsonStream, encode, error_reply

log = logging.getLogger("bitmap-tui.serve")

#: A client has this long after connecting to negotiate capabilities (a half-open client).
GREETING_TIMEOUT = 10.0
#: A client whose unread output exceeds this many bytes has stopped reading: it is disconnected
#: (QEMU and the other clients go on). Large enough for a burst of 50,000 events to a client that
#: reads a little slower than the service writes.
OUTGOING_LIMIT = 16 << 20
READ_CHUNK = 1 << 16


class Upstream(Protocol):
    version: dict[str, Any]

    async def command(self, execute: str, arguments: dict[str, Any] | None) -> dict[str, Any]: ...


class Closed(Exception):
    """The client's connection ended (its reason is logged once)."""


class ClientSession:
    """One connected client of VM ``vm``."""

    def __init__(self, vm: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: Peer, role: Role, upstream: Upstream, audit: AuditLog) -> None:
        self.vm, self.peer, self.role = vm, peer, role
        self._reader, self._writer = reader, writer
        self._upstream, self._audit = upstream, audit
        self._stream = JsonStream()
        self._pending: list[Any] = []
        self.closed = False
        self.negotiated = False

    @property
    def who(self) -> str:
        return f"{self.peer.user} (uid {self.peer.uid}, pid {self.peer.pid})"

    # ------------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the client; a client that has stopped reading is disconnected."""
        if self.closed:
            return
        if self._writer.transport.get_write_buffer_size() > OUTGOING_LIMIT:
            self.close(f"stopped reading ({OUTGOING_LIMIT} bytes unread)")
            return
        self._writer.write(data)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("%s: %s disconnected: %s", self.vm, self.who, reason)
        self._writer.transport.abort()

    # ------------------------------------------------------------------ input

    async def _read(self) -> Any:
        while not self._pending:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                raise Closed("it hung up")
            try:
                self._pending.extend(self._stream.feed(data))
            except BadInput as exc:
                raise Closed(f"bad input: {exc}") from None
        return self._pending.pop(0)

    async def run(self) -> None:
        """Serve the client until it or QEMU goes away."""
        greeting = {"version": self._upstream.version, "capabilities": [],
                    GREETING_KEY: {"role": str(self.role), "user": self.peer.user}}
        self.send(encode({"QMP": greeting}))
        try:
            await asyncio.wait_for(self._negotiate(), GREETING_TIMEOUT)
            self.negotiated = True
            while not self.closed:
                await self._handle(await self._read())
        except TimeoutError:
            self.close(f"no capabilities negotiation within {GREETING_TIMEOUT:g} s")
        except Closed as exc:
            self.close(str(exc))
        except (ConnectionError, OSError) as exc:
            self.close(f"connection error: {exc}")

    async def _negotiate(self) -> None:
        while True:
            msg = await self._read()
            has_id, msg_id = isinstance(msg, dict) and "id" in msg, _id_of(msg)
            if isinstance(msg, dict) and msg.get("execute") == "qmp_capabilities":
                reply: dict[str, Any] = {"return": {}}
                if has_id:
                    reply["id"] = msg_id
                self.send(encode(reply))
                return
            self.send(error_reply("CommandNotFound", "Expecting capabilities negotiation "
                                  "with 'qmp_capabilities'", msg_id, has_id))

    async def _handle(self, msg: Any) -> None:
        has_id, msg_id = "id" in msg, msg.get("id")
        refusal = self._refusal(msg)
        if refusal is not None:
            self.send(error_reply(*refusal, msg_id, has_id))
            return
        execute, arguments = msg["execute"], msg.get("arguments")
        entry = None
        if is_mutating(execute):
            try:
                entry = self._audit.intent(self.vm, execute, arguments, user=self.peer.user,
                                           uid=self.peer.uid, pid=self.peer.pid)
            except AuditError as exc:
                self.send(error_reply("GenericError", f"bitmap-tui service: {exc}", msg_id, has_id))
                return
        try:
            reply = await self._upstream.command(execute, arguments)
        except (ConnectError, OutcomeUnknownError) as exc:
            if entry is not None:
                self._audit.outcome(entry, error="connection lost")
            raise Closed(str(exc)) from None
        if entry is not None:
            error = reply.get("error")
            self._audit.outcome(entry, reply=reply.get("return"),
                                error=f"{error.get('class')}: {error.get('desc')}"
                                if isinstance(error, dict) else None)
        if has_id:
            reply["id"] = msg_id
        self.send(encode(reply))

    def _refusal(self, msg: dict[str, Any]) -> tuple[str, str] | None:
        """The error class and text a command is refused with here, or None: forward it."""
        execute, arguments = msg.get("execute"), msg.get("arguments", {})
        if "exec-oob" in msg:
            return "GenericError", "bitmap-tui service: out-of-band execution is not offered"
        if not isinstance(execute, str):
            return "GenericError", "QMP input member 'execute' must be a string"
        if not isinstance(arguments, dict):
            return "GenericError", "QMP input member 'arguments' must be an object"
        if execute == "qmp_capabilities":
            return "CommandNotFound", "Capabilities negotiation is already complete, command ignored"
        if self.role is Role.VIEWER and is_mutating(execute):
            return "GenericError", (f"bitmap-tui service: user {shown(self.peer.user)} may only "
                                    f"query {self.vm} (viewer): '{shown(execute)}' was not sent")
        try:
            guard_command(execute, arguments)
        except ValidationError as exc:
            return "GenericError", f"bitmap-tui service: {exc}"
        return None


def _id_of(msg: Any) -> Any:
    return msg.get("id") if isinstance(msg, dict) else None


async def refuse(writer: asyncio.StreamWriter, desc: str) -> None:
    """Tell a client it may not connect (one QMP error), then close."""
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(error_reply("GenericError", desc))
        await asyncio.wait_for(writer.drain(), 1.0)
    writer.transport.abort()
