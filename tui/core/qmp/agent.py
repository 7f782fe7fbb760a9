"""A client for the QEMU guest agent (qemu-ga) on its host-side unix socket.

The protocol is newline-delimited JSON with no greeting. Because a reply to an earlier command
may still be in the stream (a command that timed out, a previous client), every command here is
preceded by ``guest-sync-delimited`` with a fresh id: the agent answers it with a 0xFF byte and
then the reply, so everything before the 0xFF (and any reply with another id) is discarded.
Every read has a timeout: an agent that hangs or dies fails the call, it never hangs the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from tui.core.base.errors import AgentError

DEFAULT_TIMEOUT = 10.0
_DELIMITER = b"\xff"


def agent_path(address: str) -> str:
    """``unix:/path`` (or a bare absolute path) → the socket path."""
    path = address[5:] if address.startswith("unix:") else address
    if not path.startswith("/"):
        raise AgentError(f"guest agent address {address!r}: give unix:/absolute/path")
    return path


class GuestAgent:
    """One connection to a guest agent socket. ``async with GuestAgent(addr) as ga: ...``"""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.path = agent_path(address)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> GuestAgent:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise AgentError(f"guest agent {self.address}: {_why(exc)}") from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2)
        self._reader = self._writer = None

    async def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise AgentError(f"guest agent {self.address}: {_why(exc)}") from None

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self._reader is not None
        try:
            raw = await asyncio.wait_for(self._reader.readline(), timeout)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise AgentError(f"guest agent {self.address}: {_why(exc)}") from None
        if not raw:
            await self.close()
            raise AgentError(f"guest agent {self.address}: the agent closed the connection")
        try:
            msg = json.loads(raw.lstrip(_DELIMITER))
        except ValueError:
            return {}
        return msg if isinstance(msg, dict) else {}

    async def sync(self, timeout: float | None = None) -> None:
        """``guest-sync-delimited``: skip everything up to the 0xFF and the reply with our id."""
        limit = timeout if timeout is not None else self.timeout
        token = random.randint(1, 2**31)
        # A leading 0xFF makes the agent drop any half-received command of an earlier client.
        if self._writer is None:
            await self.connect()
        assert self._writer is not None and self._reader is not None
        self._writer.write(_DELIMITER)
        await self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        try:
            await asyncio.wait_for(self._reader.readuntil(_DELIMITER), limit)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise AgentError(f"guest agent {self.address}: no sync ({_why(exc)})") from None
        while True:
            msg = await self._line(max(0.01, end - loop.time()))
            if msg.get("return") == token:
                return

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        """Sync, send one command and return its ``return`` (AgentError on its ``error``)."""
        limit = timeout if timeout is not None else self.timeout
        await self.sync(limit)
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        await self._send(msg)
        reply = await self._line(limit)
        if "error" in reply:
            err = reply["error"]
            raise AgentError(f"{command}: {err.get('desc', err) if isinstance(err, dict) else err}")
        if "return" not in reply:
            raise AgentError(f"{command}: unexpected reply {reply!r}")
        return reply["return"]

    async def post(self, command: str) -> None:
        """Write ``command`` to the agent without waiting for any answer (AgentError when it
        cannot be written). An agent that handles one command at a time and is busy (a slow
        freeze) runs it when it is done: this is how a thaw reaches an agent that stopped
        answering. The leading 0xFF makes it drop any half-received command first."""
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        self._writer.write(_DELIMITER)
        await self._send({"execute": command})

    async def freeze(self, timeout: float | None = None) -> int:
        """``guest-fsfreeze-freeze``: the number of file systems frozen."""
        return int(await self.execute("guest-fsfreeze-freeze", timeout=timeout))

    async def thaw(self, timeout: float | None = None) -> int:
        """``guest-fsfreeze-thaw``: the number of file systems thawed."""
        return int(await self.execute("guest-fsfreeze-thaw", timeout=timeout))

    async def status(self, timeout: float | None = None) -> str:
        """``guest-fsfreeze-status``: "thawed" or "frozen"."""
        return str(await self.execute("guest-fsfreeze-status", timeout=timeout))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
