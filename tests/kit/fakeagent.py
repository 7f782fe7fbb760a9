"""A fake guest agent on a unix socket, for what a real qemu-ga cannot do on demand: hang, or die
while the guest is frozen. It speaks the agent's protocol: newline-delimited JSON, no greeting,
``guest-sync-delimited`` answered with a 0xFF byte before the reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


class FakeAgent:
    """``mode``: "ok"; "hang" (stops answering once asked to freeze); "die-frozen" (freezes,
    answers, then closes its socket and stops listening). ``freeze_seconds``: how long a freeze
    takes. Like qemu-ga, it handles one command at a time (across connections: the guest sees
    one channel), and a reply to a client that has gone is lost while the commands it wrote
    before going still run. ``done`` lists "frozen"/"thawed" as each takes effect."""

    def __init__(self, path: Path, mode: str = "ok", *, freeze_seconds: float = 0.0) -> None:
        self.path = path
        self.mode = mode
        self.freeze_seconds = freeze_seconds
        self.frozen = False
        self.done: list[str] = []
        self._one_at_a_time = asyncio.Lock()
        self.log: list[str] = []
        self.on_freeze: Callable[[], Awaitable[None]] | None = None
        self.on_thaw: Callable[[], Awaitable[None]] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._hung = False

    async def start(self) -> FakeAgent:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._hung = False
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.replace(b"\xff", b"").strip()
                if not text:
                    continue
                msg = json.loads(text)
                cmd = msg.get("execute")
                self.log.append(cmd)
                if self._hung:
                    continue
                async with self._one_at_a_time:
                    reply = await self._answer(cmd, msg.get("arguments") or {})
                if reply is None:
                    continue
                prefix = b"\xff" if cmd == "guest-sync-delimited" else b""
                with contextlib.suppress(ConnectionError):  # the client left: the reply is lost
                    writer.write(prefix + json.dumps(reply).encode() + b"\n")
                    await writer.drain()
                if cmd == "guest-fsfreeze-freeze" and self.mode == "die-frozen":
                    writer.close()
                    await self.stop()
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, cmd: str, args: dict[str, Any]) -> dict[str, Any] | None:
        if cmd == "guest-sync-delimited":
            return {"return": args["id"]}
        if cmd == "guest-fsfreeze-freeze":
            if self.mode == "hang":
                self._hung = True
                return None
            if self.on_freeze is not None:
                await self.on_freeze()
            await asyncio.sleep(self.freeze_seconds)
            self.frozen = True
            self.done.append("frozen")
            return {"return": 1}
        if cmd == "guest-fsfreeze-thaw":
            if self.on_thaw is not None:
                await self.on_thaw()
            was, self.frozen = self.frozen, False
            self.done.append("thawed")
            return {"return": 1 if was else 0}
        if cmd == "guest-fsfreeze-status":
            return {"return": "frozen" if self.frozen else "thawed"}
        return {"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}}
