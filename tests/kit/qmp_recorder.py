"""A recording QMP proxy: a unix socket in front of a real QEMU that forwards every byte and
records the name of every command a client sends. ``drop_reply_to="transaction"`` makes it lose
one reply the way a dropped link does: the command reaches QEMU, which runs it; whatever QEMU
says next is not forwarded, and the client's connection is closed instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

# What a read-only client may send: queries, the handshake and the bitmap checksum (a read).
QUERIES = frozenset({"qmp_capabilities", "x-debug-block-dirty-bitmap-sha256"})


def is_query(command: str) -> bool:
    return command.startswith("query-") or command in QUERIES


class RecordingProxy:
    """``await RecordingProxy(listen, qemu_socket).start()``; ``commands`` lists what was sent."""

    def __init__(self, listen: Path, upstream: Path, *, drop_reply_to: str | None = None) -> None:
        self.listen = listen
        self.upstream = upstream
        self.commands: list[str] = []
        self.drop_reply_to = drop_reply_to
        #: Set once the command was forwarded and the link dropped before its reply.
        self.dropped = asyncio.Event()
        self._swallow = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"unix:{self.listen}"

    def mutating(self) -> list[str]:
        return [c for c in self.commands if not is_query(c)]

    async def start(self) -> RecordingProxy:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.listen))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        down = asyncio.create_task(self._pipe(up_reader, writer, record=False))
        try:
            await self._pipe(reader, up_writer, record=True)
        finally:
            down.cancel()
            with contextlib.suppress(BaseException):
                await down
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    record: bool) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if record:
                    buf = self._record(decoder, buf + data.decode(errors="replace"))
                elif self._swallow:  # QEMU answers the dropped command: the client never sees it
                    self._swallow = False
                    dst.close()
                    self.dropped.set()
                    return
                dst.write(data)
                await dst.drain()

    def _record(self, decoder: json.JSONDecoder, buf: str) -> str:
        while True:
            buf = buf.lstrip()
            if not buf:
                return ""
            try:
                msg, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                return buf  # an incomplete message: wait for more
            if isinstance(msg, dict):
                name = msg.get("execute") or msg.get("exec-oob")
                self.commands.append(str(name))
                if name == self.drop_reply_to and not self.dropped.is_set():
                    self._swallow = True
            buf = buf[end:]
