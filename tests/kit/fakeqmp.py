"""A scripted QMP server on a unix socket, for what a real QEMU cannot do on demand.

Old versions' reply shapes, garbage on the wire, hangs, huge messages and event floods.
Replies are looked up per command in ``replies`` (a value, or a callable taking the arguments);
``{"error": {...}}`` values are sent as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Reply = Any


def greeting(major: int = 7, minor: int = 2, micro: int = 0) -> dict[str, Any]:
    return {
        "QMP": {
            "version": {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "fake"},
            "capabilities": [],
        }
    }


class FakeQMP:
    """``mode``: ``qmp`` (default), ``garbage`` (random bytes instead of a greeting), ``silent``
    (accepts and never speaks), ``http`` (an HTTP answer)."""

    def __init__(
        self,
        path: Path,
        *,
        version: tuple[int, int, int] = (7, 2, 0),
        replies: dict[str, Reply] | None = None,
        mode: str = "qmp",
    ) -> None:
        self.path = Path(path)
        self.version = version
        self.mode = mode
        self.replies: dict[str, Reply] = {
            "qmp_capabilities": {},
            "query-version": {
                "qemu": {"major": version[0], "minor": version[1], "micro": version[2]},
                "package": "fake",
            },
            "query-commands": [
                {"name": n}
                for n in ("qmp_capabilities", "query-version", "query-commands",
                          "query-named-block-nodes", "query-block", "query-jobs",
                          "query-block-jobs", "transaction", "block-dirty-bitmap-add",
                          "block-dirty-bitmap-merge")
            ],
            "query-named-block-nodes": [],
            "query-block": [],
            "query-jobs": [],
            "query-block-jobs": [],
        }
        self.replies.update(replies or {})
        self.received: list[dict[str, Any]] = []
        # Commands whose reply is withheld forever (a hang in the middle of a session).
        self.hang_on: set[str] = set()
        # Events sent just before the next reply to a command (once): a race on the wire.
        self.events_before: dict[str, list[dict[str, Any]]] = {}
        # Commands answered with these bytes instead of a reply (half a reply, a huge line, junk).
        self.raw_on: dict[str, bytes] = {}
        # Connections accepted so far (a reconnect makes it grow).
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=2**26)

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def drop_clients(self) -> None:
        for w in self._writers:
            w.close()
        self._writers.clear()

    @property
    def commands(self) -> list[str]:
        return [m.get("execute", "") for m in self.received]

    async def send_raw(self, data: bytes) -> None:
        """Send bytes to every client connected now (a client that hangs up is skipped)."""
        for w in list(self._writers):
            if w.is_closing():
                continue
            with contextlib.suppress(ConnectionError):
                w.write(data)
                await w.drain()

    async def emit(self, event: str, data: dict[str, Any] | None = None) -> None:
        msg = {"event": event, "data": data or {}, "timestamp": {"seconds": 1, "microseconds": 0}}
        await self.send_raw(json.dumps(msg).encode() + b"\r\n")

    @staticmethod
    async def _messages(reader: asyncio.StreamReader) -> Any:
        """QMP clients send JSON objects back to back, not necessarily one per line."""
        decoder = json.JSONDecoder()
        buf = ""
        while chunk := await reader.read(65536):
            buf += chunk.decode(errors="replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    msg, end = decoder.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                if isinstance(msg, dict):
                    yield msg

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted += 1
        try:
            if self.mode == "silent":
                await reader.read()
                return
            if self.mode == "garbage":
                writer.write(b"\x00\xff garbage \x13\x37 not json }{\r\n")
                await writer.drain()
                await reader.read()
                return
            if self.mode == "http":
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(json.dumps(greeting(*self.version)).encode() + b"\r\n")
            await writer.drain()
            async for msg in self._messages(reader):
                self.received.append(msg)
                cmd = msg.get("execute", "")
                if cmd in self.hang_on:
                    continue
                for ev in self.events_before.pop(cmd, []):
                    ev = {"timestamp": {"seconds": 1, "microseconds": 0}, **ev}
                    writer.write(json.dumps(ev).encode() + b"\r\n")
                if cmd in self.raw_on:
                    writer.write(self.raw_on[cmd])
                    await writer.drain()
                    continue
                reply = self.replies.get(cmd, {"error": {"class": "CommandNotFound",
                                                          "desc": f"The command {cmd} has not been found"}})
                if callable(reply):
                    reply = reply(msg.get("arguments") or {})
                if isinstance(reply, dict) and set(reply) == {"error"}:
                    out: dict[str, Any] = dict(reply)
                else:
                    out = {"return": reply}
                if "id" in msg:
                    out["id"] = msg["id"]
                writer.write(json.dumps(out).encode() + b"\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def commands_reply(*names: str) -> list[dict[str, str]]:
    return [{"name": n} for n in names]


Replier = Callable[[dict[str, Any]], Reply]
